#!/usr/bin/env bash
# BoostNet on MSDNet-GE, ImageNet, anytime (SPEC §7): NGPUS (default 4) x 64 images, SyncBN.
# Data: DATA_ROOT (default data/imagenet) with train/ and val/ class folders.
# Usage: scripts/msdnet_imagenet_anytime.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe imagenet anytime msdnet_imagenet_anytime "${IMAGENET_TRAINING[@]}" \
  --arch msdnet_ge --nBlocks 5 --stepmode even --step 7 --base 7 --nChannels 32 \
  --growthRate 16 --grFactor 1-2-4-4 --bnFactor 1-2-4-4 "$@"
