#!/usr/bin/env bash
# BoostNet on RANet, CIFAR-100, budgeted batch (docs/recipes.md), one of the paper's three models:
#   1: scale 1-2-3,   gr/bn 4-2-1     2: scale 1-2-2-3, gr/bn 4-2-2-1     3: scale 1-2-3-3, gr/bn 4-2-1-1
# Usage: scripts/ranet_cifar100_budgeted.sh {1|2|3} [extra training flags]
set -euo pipefail
case "${1:-}" in
  1|2|3) MODEL="$1" ;;
  *) echo "usage: $0 {1|2|3} [extra training flags]" >&2; exit 2 ;;
esac
shift
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe "ranet_cifar100_budgeted_model$MODEL" "$@"
