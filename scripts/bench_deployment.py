"""Benchmark: deployed early exit of the CIFAR-100 MSDNet recipe model on the CPU, written as JSON.

The model of `--recipe msdnet_cifar100_budgeted` (random weights: timing needs no training) gets
thresholds that make its expected cost about half the full network's on its own outputs for
random images (the protocol's family fitted with the full network's predictions as targets,
as scripts/bench_early_exit.py does). Its stages run with real early exit through eager PyTorch
(conv+BN folded) and ONNX Runtime (exported stages), at batch 1 and batched, each paired with
the full network on the same backend. Targets: at batch 1, ONNX Runtime reaches >= 90% of the
promised speed-up (full MACs / expected MACs) and is no slower per image than eager PyTorch.

On a GPU (`--device cuda`) the same model and thresholds run through eager PyTorch on the GPU
as the evaluator's real early exit does: the full network replays one CUDA graph, each exit
stage one of its own (ONNX Runtime is the CPU package here, so it is not timed on the GPU).

    python scripts/bench_deployment.py --out results/bench_deployment.json
    python scripts/bench_deployment.py --device cuda --out results/bench_deployment_gpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import OneLineParser, int_at_least, output_file  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.machine import cpu_name  # noqa: E402

RECIPE = "msdnet_cifar100_budgeted"
COST_FRACTION = 0.5
TARGET_SHARE_OF_PROMISE = 0.9
FIT_IMAGES = 512


def parse_bench_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options, counts checked as they are parsed."""
    parser = OneLineParser(prog="bench_deployment.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int_at_least(1), default=256, help="random images timed")
    parser.add_argument(
        "--batch-sizes", type=int_at_least(1), nargs="+", default=[1, 256], help="batch sizes timed"
    )
    parser.add_argument("--repeats", type=int_at_least(1), default=5, help="paired timed passes per row")
    parser.add_argument("--threads", type=int_at_least(1), default=1, help="CPU threads of both backends")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and images")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: eager PyTorch and ONNX Runtime; cuda: PyTorch with CUDA graphs per exit stage",
    )
    parser.add_argument(
        "--out", type=output_file, default=Path("results/bench_deployment.json"), help="JSON written"
    )
    return parser.parse_args(argv)


def half_cost_policy(network: Any, costs: list[int], images: Any) -> Any:
    """A policy whose one setting (`--budget` half the full cost) is fitted on `images`."""
    import torch

    from adaptive_inference import thresholds_for_budget
    from boostnet.data.datasets import DATASETS
    from boostnet.evaluation.policy import runless_policy

    with torch.inference_mode():
        probs = network.probabilities(network.backbone(images))
    choice = thresholds_for_budget(probs, probs[-1].argmax(dim=1), costs, COST_FRACTION * costs[-1])
    budget = {
        **choice.to_dict(),
        "budget": COST_FRACTION * costs[-1],
        "expected_macs": choice.val_expected_cost,
    }
    budget.update(test_accuracy=None, test_expected_macs=None)
    return runless_policy(costs, DATASETS["cifar100"], budget)


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """ORT's share of the promise and its per-image time against eager PyTorch, per batch size;
    on a GPU, PyTorch's share of the promise."""
    found: dict[str, Any] = {}
    if rows[0]["backend"] == "pytorch-cuda-graphs":
        return {
            f"batch_{row['batch_size']}": {"measured_over_promised": row["measured_over_promised"]}
            for row in rows
        }
    for size in sorted({row["batch_size"] for row in rows}):
        by = {row["backend"]: row for row in rows if row["batch_size"] == size}
        ort, eager = by["onnxruntime"], by["pytorch"]
        found[f"batch_{size}"] = {
            "ort_measured_over_promised": ort["measured_over_promised"],
            "ort_measured_over_latency_promised": ort["measured_over_latency_promised"],
            "ort_over_eager_early_exit_speed": ort["early_exit_images_per_second"]
            / eager["early_exit_images_per_second"],
            "ort_over_eager_full_network_speed": ort["full_network_images_per_second"]
            / eager["full_network_images_per_second"],
            "meets_90_percent_of_promise": ort["measured_over_promised"] >= TARGET_SHARE_OF_PROMISE,
            "ort_no_slower_than_eager": ort["early_exit_ms_per_image"] <= eager["early_exit_ms_per_image"],
        }
    return found


def recipe_network(seed: int) -> tuple[Any, list[int]]:
    """The recipe's boosted network with random weights (eval mode) and its cumulative costs."""
    import torch

    from args import parse_args
    from boostnet.recipes import RECIPES

    torch.manual_seed(seed)
    job = parse_args(list(RECIPES[RECIPE].flags), prog="bench_deployment.py")
    model = job.model.build().eval()
    network = job.objective.network(model, job.model.num_exits)
    return network, job.model.backbone.cost(model, job.model.inputs).macs


def main(argv: Sequence[str] | None = None) -> dict:
    """Build the recipe model, fit half-cost thresholds, time both backends, write the report."""
    bench = parse_bench_args(argv)
    import numpy as np
    import torch

    from boostnet.deployment.export import timing_backends
    from boostnet.deployment.runner import classify
    from boostnet.deployment.speed import device_speed_rows, speed_table
    from boostnet.evaluation.early_exit import early_exit_predict
    from boostnet.recipes import RECIPES
    from utils.distributed import DistInfo, resolve_device
    from utils.json_files import write_json

    device = resolve_device(bench.device, DistInfo())  # --device cuda without a GPU: one line, no work
    torch.set_num_threads(bench.threads)
    network, costs = recipe_network(bench.seed)
    policy = half_cost_policy(network, costs, torch.randn(FIT_IMAGES, 3, 32, 32))
    images = torch.randn(bench.images, 3, 32, 32)
    if device.type == "cuda":
        rows = device_speed_rows(
            network.to(device), policy.budget, costs[-1], images, bench.batch_sizes, device, bench.repeats
        )
        with torch.inference_mode():
            decided = early_exit_predict(network, images.to(device), policy.budget.thresholds)
        exits = decided.exit_index.cpu().numpy()
    else:
        with tempfile.TemporaryDirectory() as folder:
            backends = timing_backends(network, policy, 3, Path(folder) / "onnx", bench.threads)
            rows, _ = speed_table(backends, policy, [policy.budget], images, bench.batch_sizes, bench.repeats)
            exits = classify(backends["onnxruntime"], images, policy.budget.thresholds).exits
    report = {
        "recipe": RECIPE,
        "model_flags": list(RECIPES[RECIPE].flags),
        "weights": "random",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": bench.threads,
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "costs": costs,
        "thresholds": policy.budget.thresholds,
        "expected_macs_fraction": policy.budget.expected_macs / costs[-1],
        "timed_images_exit_counts": np.bincount(exits, minlength=len(costs)).tolist(),
        "timed_images_macs_fraction": sum(costs[n] for n in exits.tolist()) / len(exits) / costs[-1],
        "images": bench.images,
        "repeats": bench.repeats,
        "rows": rows,
        "verdict": verdict(rows),
    }
    bench.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(bench.out, report)
    for row in rows:
        by_latency = row["latency_promised_speedup"]
        print(f"{row['backend']:>11} batch {row['batch_size']:>3}: promised {row['promised_speedup']:.2f}x, "
              + (f"by stage latency {by_latency:.2f}x, " if by_latency else "")
              + f"measured {row['measured_speedup']:.2f}x ({row['measured_over_promised']:.0%}), "
              f"early exit {row['early_exit_ms_per_image']:.3f} ms/image")  # fmt: skip
    print(f"written to {bench.out}")
    return report


if __name__ == "__main__":
    run_cli(main)
