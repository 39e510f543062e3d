#!/usr/bin/env bash
# BoostNet on RANet, CIFAR-100, anytime (docs/recipes.md): train, then evaluate every exit.
# Usage: scripts/ranet_cifar100_anytime.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe ranet_cifar100_anytime "$@"
