#!/usr/bin/env bash
# BoostNet on RANet, CIFAR-100, anytime (SPEC §7): train, then evaluate every exit.
# Usage: scripts/ranet_cifar100_anytime.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe cifar100 anytime ranet_cifar100_anytime "${CIFAR_TRAINING[@]}" \
  --arch ranet --nBlocks 2 --stepmode even --step 4 --nChannels 16 --scale-list 1-2-3-3 \
  --grFactor 4-2-1-1 --bnFactor 4-2-1-1 "$@"
