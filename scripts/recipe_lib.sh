# Shared by the recipe scripts (source it, do not run it): go to the repository root, set up the
# environment, then `run_recipe` trains and evaluates one run directory. The recipes themselves
# (flags, evaluation) are written once, in boostnet/recipes.py.
#
# Environment: RESULT_DIR (default runs/<recipe>), DATA_ROOT (default data, or data/imagenet),
# NGPUS (ImageNet, default 4), BOOSTNET_VENV (default .venv).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
VENV="${BOOSTNET_VENV:-$ROOT/.venv}"

# run_recipe RECIPE [training flags...]
# Trains into RESULT_DIR (continuing it when it already holds a checkpoint: --resume auto),
# then evaluates that run directory as the recipe says.
run_recipe() {
  local recipe="$1"
  shift
  local fields
  read -r -a fields <<< "$("$VENV/bin/python" -m boostnet.recipes "$recipe")"
  local family="${fields[0]}" eval_flags=("${fields[@]:1}")
  local run_dir="${RESULT_DIR:-runs/$recipe}"
  if [ "$family" = imagenet ]; then
    "$VENV/bin/torchrun" --standalone --nproc_per_node "${NGPUS:-4}" train_imagenet.py \
      --recipe "$recipe" --data-root "${DATA_ROOT:-data/imagenet}" --result_dir "$run_dir" \
      --resume auto "$@"
  else
    "$VENV/bin/python" train_cifar100.py --recipe "$recipe" --data-root "${DATA_ROOT:-data}" \
      --result_dir "$run_dir" --resume auto "$@"
  fi
  "$VENV/bin/python" "eval_$family.py" --evaluate-from "$run_dir" "${eval_flags[@]}"
}
