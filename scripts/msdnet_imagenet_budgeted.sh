#!/usr/bin/env bash
# BoostNet on MSDNet-GE, ImageNet, budgeted batch (SPEC §7): step/base 5, 50,000 training
# images held out for the thresholds; NGPUS (default 4) x 64 images, SyncBN.
# Usage: scripts/msdnet_imagenet_budgeted.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe imagenet both msdnet_imagenet_budgeted "${IMAGENET_TRAINING[@]}" \
  --arch msdnet_ge --nBlocks 5 --stepmode even --step 5 --base 5 --nChannels 32 \
  --growthRate 16 --grFactor 1-2-4-4 --bnFactor 1-2-4-4 --use-valid "$@"
