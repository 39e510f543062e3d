#!/usr/bin/env bash
# BoostNet on MSDNet-GE, ImageNet, anytime (docs/recipes.md): torchrun on NGPUS (default 4) x 64
# images, SyncBN. Data: DATA_ROOT (default data/imagenet) with train/ and val/ class folders.
# Usage: scripts/msdnet_imagenet_anytime.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe msdnet_imagenet_anytime "$@"
