#!/usr/bin/env bash
# BoostNet on MSDNet-GE, ImageNet, budgeted batch (docs/recipes.md): 50,000 training images
# held out for the thresholds; NGPUS (default 4) x 64 images, SyncBN; flat curve.
# Usage: scripts/msdnet_imagenet_budgeted.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe msdnet_imagenet_budgeted "$@"
