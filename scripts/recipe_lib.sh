# Shared by the recipe scripts (source it, do not run it): go to the repository root, set up the
# environment, then `run_recipe` trains and evaluates one run directory.
#
# Environment: RESULT_DIR (default runs/<recipe>), DATA_ROOT (default data, or data/imagenet),
# NGPUS (ImageNet, default 4), BOOSTNET_VENV (default .venv).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
VENV="${BOOSTNET_VENV:-$ROOT/.venv}"

# run_recipe DATASET EVALMODE RECIPE [training flags...]
# Trains into RESULT_DIR (continuing it when it already holds a checkpoint: --resume auto),
# then evaluates that run directory with the matching eval entry point.
run_recipe() {
  local dataset="$1" evalmode="$2" recipe="$3"
  shift 3
  local run_dir="${RESULT_DIR:-runs/$recipe}"
  if [ "$dataset" = imagenet ]; then
    "$VENV/bin/torchrun" --standalone --nproc_per_node "${NGPUS:-4}" train_imagenet.py \
      --data-root "${DATA_ROOT:-data/imagenet}" --result_dir "$run_dir" --resume auto "$@"
    "$VENV/bin/python" eval_imagenet.py --evaluate-from "$run_dir" --evalmode "$evalmode"
  else
    "$VENV/bin/python" train_cifar100.py --dataset "$dataset" --data-root "${DATA_ROOT:-data}" \
      --result_dir "$run_dir" --resume auto "$@"
    "$VENV/bin/python" eval_cifar100.py --evaluate-from "$run_dir" --evalmode "$evalmode"
  fi
}

# Flags every CIFAR-100 recipe shares (SPEC §7): boosted loss, r 0.5, batch 64, 300 epochs,
# SGD lr 0.1 decayed x0.1 at 150 and 225, momentum 0.9, weight decay 1e-4.
CIFAR_TRAINING=(--loss boost --ensemble_reweight 0.5 --batch-size 64 --epochs 300 --lr 0.1
                --lr_milestones 150,225 --lr_gamma 0.1 --momentum 0.9 --weight-decay 1e-4)

# Flags every ImageNet recipe shares: 64 images per GPU, 90 epochs decayed at 30 and 60.
IMAGENET_TRAINING=(--loss boost --ensemble_reweight 0.5 --batch-size 64 --epochs 90 --lr 0.1
                   --lr_milestones 30,60 --lr_gamma 0.1 --momentum 0.9 --weight-decay 1e-4)
