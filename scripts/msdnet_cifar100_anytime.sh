#!/usr/bin/env bash
# BoostNet on MSDNet-GE, CIFAR-100, anytime (docs/recipes.md): train, then evaluate every exit.
# Usage: scripts/msdnet_cifar100_anytime.sh [extra training flags, e.g. --loss joint]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe msdnet_cifar100_anytime "$@"
