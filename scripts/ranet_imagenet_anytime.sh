#!/usr/bin/env bash
# BoostNet on RANet, ImageNet, anytime (docs/recipes.md): NGPUS (default 4) x 64 images, SyncBN.
# Usage: scripts/ranet_imagenet_anytime.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe ranet_imagenet_anytime "$@"
