#!/usr/bin/env bash
# The main job: train a small BoostNet (MSDNet-GE, 4 exits) on the embedded digits dataset on the
# CPU, evaluate it (anytime and budgeted batch) and plot the curves into RUN/plots; a few minutes.
# Running it again continues or re-evaluates the same run directory.
# Usage: scripts/demo.sh [extra training flags]; RESULT_DIR sets the run directory (runs/demo).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
RUN="${RESULT_DIR:-runs/demo}"
# The model is tiny: extra intra-op threads only add overhead (a lot on a busy machine).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
RESULT_DIR="$RUN" run_recipe digits both demo --device cpu --workers 0 \
  --arch msdnet_ge --nBlocks 4 --stepmode even --step 1 --base 2 --nChannels 8 --growthRate 4 \
  --loss boost --ensemble_reweight 0.5 --batch-size 32 --epochs 6 --lr 0.1 --lr_milestones 4 \
  --use-valid "$@"
"$VENV/bin/python" -m utils.plots "$RUN" --out "$RUN/plots"
echo "demo: run directory $RUN (log.txt, config.json, checkpoints, TensorBoard in tb/, plots/)" >&2
