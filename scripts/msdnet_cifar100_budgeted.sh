#!/usr/bin/env bash
# BoostNet on MSDNet-GE, CIFAR-100, budgeted batch (SPEC §7): 6 exits, a held-out validation
# split for the thresholds; evaluates anytime and budgeted.
# Usage: scripts/msdnet_cifar100_budgeted.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe cifar100 both msdnet_cifar100_budgeted "${CIFAR_TRAINING[@]}" \
  --arch msdnet_ge --nBlocks 6 --stepmode even --step 2 --base 4 --nChannels 16 --use-valid "$@"
