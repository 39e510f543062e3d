#!/usr/bin/env bash
# BoostNet on MSDNet-GE (6 exits), CIFAR-100, budgeted batch (docs/recipes.md): trains with a
# 5,000-image validation split for the thresholds; evaluates anytime and budgeted (flat curve).
# Usage: scripts/msdnet_cifar100_budgeted.sh [extra training flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
run_recipe msdnet_cifar100_budgeted "$@"
