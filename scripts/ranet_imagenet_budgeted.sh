#!/usr/bin/env bash
# BoostNet on RANet, ImageNet, budgeted batch (SPEC §7), the paper's nChannels 32 or 64 model;
# 50,000 training images held out for the thresholds; NGPUS (default 4) x 64, SyncBN.
# Usage: scripts/ranet_imagenet_budgeted.sh {32|64} [extra training flags]
set -euo pipefail
case "${1:-}" in
  32|64) CHANNELS="$1" ;;
  *) echo "usage: $0 {32|64} [extra training flags]" >&2; exit 2 ;;
esac
shift
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe imagenet both "ranet_imagenet_budgeted_c$CHANNELS" "${IMAGENET_TRAINING[@]}" \
  --arch ranet --nBlocks 2 --stepmode even --step 8 --growthRate 16 --scale-list 1-2-3-4 \
  --grFactor 4-2-2-1 --bnFactor 4-2-2-1 --nChannels "$CHANNELS" --use-valid "$@"
