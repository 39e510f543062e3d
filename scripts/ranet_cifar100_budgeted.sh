#!/usr/bin/env bash
# BoostNet on RANet, CIFAR-100, budgeted batch (SPEC §7), one of the paper's three models:
#   1: scale 1-2-3,   gr/bn 4-2-1     2: scale 1-2-2-3, gr/bn 4-2-2-1     3: scale 1-2-3-3, gr/bn 4-2-1-1
# Usage: scripts/ranet_cifar100_budgeted.sh {1|2|3} [extra training flags]
set -euo pipefail
case "${1:-}" in
  1) SCALES=1-2-3 FACTORS=4-2-1 ;;
  2) SCALES=1-2-2-3 FACTORS=4-2-2-1 ;;
  3) SCALES=1-2-3-3 FACTORS=4-2-1-1 ;;
  *) echo "usage: $0 {1|2|3} [extra training flags]" >&2; exit 2 ;;
esac
MODEL="$1"
shift
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe cifar100 both "ranet_cifar100_budgeted_model$MODEL" "${CIFAR_TRAINING[@]}" \
  --arch ranet --nBlocks 2 --stepmode lin_grow --step 2 --nChannels 16 --scale-list "$SCALES" \
  --grFactor "$FACTORS" --bnFactor "$FACTORS" --use-valid "$@"
