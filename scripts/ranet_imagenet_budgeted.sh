#!/usr/bin/env bash
# BoostNet on RANet, ImageNet, budgeted batch (docs/recipes.md), the 32- or 64-channel model;
# 50,000 training images held out for the thresholds; NGPUS (default 4) x 64, SyncBN; flat curve.
# Usage: scripts/ranet_imagenet_budgeted.sh {32|64} [extra training flags]
set -euo pipefail
case "${1:-}" in
  32|64) CHANNELS="$1" ;;
  *) echo "usage: $0 {32|64} [extra training flags]" >&2; exit 2 ;;
esac
shift
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe "ranet_imagenet_budgeted_c$CHANNELS" "$@"
