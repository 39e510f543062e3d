#!/usr/bin/env bash
# BoostNet on RANet, ImageNet, anytime (SPEC §7): nChannels 64; NGPUS (default 4) x 64, SyncBN.
# Usage: scripts/ranet_imagenet_anytime.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe imagenet anytime ranet_imagenet_anytime "${IMAGENET_TRAINING[@]}" \
  --arch ranet --nBlocks 2 --stepmode even --step 8 --growthRate 16 --scale-list 1-2-3-4 \
  --grFactor 4-2-2-1 --bnFactor 4-2-2-1 --nChannels 64 "$@"
