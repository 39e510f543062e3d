#!/usr/bin/env bash
# BoostNet on MSDNet-GE, CIFAR-100, anytime (SPEC §7): train, then evaluate every exit.
# Usage: scripts/msdnet_cifar100_anytime.sh [extra training flags, e.g. --loss joint]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe cifar100 anytime msdnet_cifar100_anytime "${CIFAR_TRAINING[@]}" \
  --arch msdnet_ge --nBlocks 10 --stepmode even --step 2 --base 4 --nChannels 16 "$@"
