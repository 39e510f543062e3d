#!/usr/bin/env bash
# The one prepared run for a session that is lent a GPU: the GPU tests, the deployment
# benchmark with a CUDA graph per exit stage, and the recipe benchmark's graph mode at CIFAR
# size (the README's GPU tables). Each step logs to OUT/<step>.log and writes its JSON there;
# a failing step does not stop the next, and the exit status says whether all passed.
#
#   bash scripts/gpu_check.sh OUT          # PYTHON=... to use another interpreter (default python3)
set -u
out=${1:?usage: bash scripts/gpu_check.sh OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

step() {
    local name=$1
    shift
    echo "== $name: $*"
    if "$@" >"$out/$name.log" 2>&1; then echo "   passed"; else echo "   FAILED, see $out/$name.log"; status=1; fi
    tail -n 8 "$out/$name.log"
}

step gpu_tests "$python" -m pytest -q tests/test_fast_step.py tests/test_early_exit_gpu.py \
    tests/test_cuda_graphs.py tests/test_early_exit.py tests/test_gpu_data.py
step bench_deployment_gpu "$python" scripts/bench_deployment.py --device cuda --out "$out/bench_deployment_gpu.json"
step benchmark_cifar "$python" scripts/benchmark.py --modes cuda_graph --steps 30 --warmup 5 \
    --models msdnet_cifar100 ranet_cifar100 --out "$out/bench_cifar.json"
exit $status
