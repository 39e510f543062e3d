#!/usr/bin/env bash
# A SLURM batch job that trains and requeues itself when it is stopped before the end.
#
#   sbatch --time=4:00:00 scripts/slurm_requeue.sh --dataset cifar100 --result_dir runs/c100 ...
#   TRAIN="torchrun --standalone --nproc_per_node 4 train_imagenet.py" sbatch --gres=gpu:4 \
#       scripts/slurm_requeue.sh --data-root /data/imagenet --result_dir runs/in1k ...
#
# SLURM signals this script (USR1, 120 s before the time limit, or TERM); it passes the stop on
# to the training as SIGTERM. The training finishes its step, saves a recovery checkpoint and
# exits with status 75; the script then requeues the job, whose next run continues from that
# checkpoint: every run is the same command with --resume auto. Any other ending ends the job
# with the training's status. Submit from the repository root; TRAIN (default
# "python train_cifar100.py") is split on spaces.
#SBATCH --job-name=boostnet
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -uo pipefail

EXIT_PREEMPTED=75
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
read -r -a train <<< "${TRAIN:-python train_cifar100.py}"

stops=0
pass_stop_on() {
  stops=$((stops + 1))
  kill -TERM "$child" 2>/dev/null
}
trap pass_stop_on USR1 TERM

"${train[@]}" "$@" --resume auto &
child=$!
waited=0
while :; do
  status=0
  wait "$child" || status=$?
  [ "$stops" -eq "$waited" ] && break  # else a trapped signal cut the wait short: wait again
  waited=$stops                        # (bash keeps the status of a child that has ended)
done

# Preempted: the training saved and said so, or it died of the forwarded stop before it could.
if [ "$status" -eq "$EXIT_PREEMPTED" ] || { [ "$stops" -gt 0 ] && [ "$status" -gt 128 ]; }; then
  echo "slurm_requeue.sh: training stopped (status $status); requeueing job ${SLURM_JOB_ID:-?}" >&2
  scontrol requeue "${SLURM_JOB_ID:?not running under SLURM}"
  exit 0
fi
exit "$status"
