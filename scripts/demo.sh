#!/usr/bin/env bash
# The main job, offline, on the CPU, in a few minutes: train BoostNet and the joint-loss baseline
# (the same 4-exit MSDNet-GE, the same seed) on the embedded Fashion-MNIST subset (6,000 training
# and 1,000 test images, 600 of the training images held out for the thresholds), evaluate both
# anytime and in budgeted batch, and draw both methods' curves into RUN/plots (anytime.png,
# budgeted.png, results.md). Running it again continues or re-evaluates the same runs.
# While the two runs train side by side, the console shows each one's epochs, one line each
# (epoch, loss, accuracy, seconds, ETA), prefixed by its loss; RUN/train_boost.out and
# RUN/train_joint.out keep the same lines. The total wall time is printed at the end.
# Usage: scripts/demo.sh [extra training flags for both runs]; RESULT_DIR sets RUN (runs/demo).
set -euo pipefail
case " $* " in
  *" -h "* | *" --help "*) sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0 ;;
esac
source "$(dirname "${BASH_SOURCE[0]}")/recipe_lib.sh"
RUN="${RESULT_DIR:-runs/demo}"
MODEL=(--dataset fashion_mnist_mini --device cpu --workers 0 --arch msdnet_ge --nBlocks 4
       --stepmode even --step 1 --base 2 --nChannels 8 --growthRate 4 --batch-size 64
       --epochs 8 --lr 0.1 --lr_milestones 6 --use-valid --seed 0)

train() {  # train LOSS [flags]: one run directory per objective, resumed if it has a checkpoint;
           # its output goes to RUN/train_LOSS.out and, each line prefixed with "LOSS: ", to stderr
  local loss="$1" resume=() line
  shift
  [ -f "$RUN/$loss/model_latest.pth" ] && resume=(--resume)
  PYTHONUNBUFFERED=1 "$VENV/bin/python" train_cifar100.py "${MODEL[@]}" --loss "$loss" \
    --result_dir "$RUN/$loss" "${resume[@]}" "$@" 2>&1 | tee "$RUN/train_$loss.out" |
    while IFS= read -r line; do printf '%s: %s\n' "$loss" "$line" >&2; done
}

mkdir -p "$RUN"
# The model is tiny: one thread per run, both runs side by side.
export OMP_NUM_THREADS=1
echo "demo: training BoostNet and the joint baseline side by side (logs: $RUN/train_*.out)" >&2
train boost "$@" & boost=$!
train joint "$@" & joint=$!
status=0
wait "$boost" || status=$?
wait "$joint" || status=$?
[ "$status" = 0 ] || exit "$status"
for loss in boost joint; do
  "$VENV/bin/python" eval_cifar100.py --evaluate-from "$RUN/$loss" --evalmode both
done
"$VENV/bin/python" -m utils.plots "$RUN/boost" "$RUN/joint" --out "$RUN/plots"
printf 'demo: done in %dm%02ds; runs in %s and %s, plots and results.md in %s\n' \
  $((SECONDS / 60)) $((SECONDS % 60)) "$RUN/boost" "$RUN/joint" "$RUN/plots" >&2
