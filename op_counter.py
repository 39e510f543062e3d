"""Per-exit cumulative multiply-adds and parameters in the MSDNet convention (docs/costs.md).

The model comes from the model flags, from a paper recipe (`--recipe NAME`) or from a run
directory's config.json (`--run-dir RUN_DIR`); typed flags override either. The counting
itself is the backbone's own convention (models/costs.py: forward hooks for MSDNet and RANet,
torch's flop counter for timm backbones; docs/costs.md).

    python op_counter.py --arch msdnet_ge --nBlocks 10 --step 2 --base 4 --json
    python op_counter.py --recipe ranet_imagenet_anytime
    python op_counter.py --run-dir runs/msdnet_c100
    python op_counter.py --arch timm:resnet18 --dataset fashion_mnist
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from args import parse_costs_args
from utils.errors import run_cli
from utils.json_files import json_text

if TYPE_CHECKING:
    from models.costs import ExitCosts


def format_table(costs: ExitCosts) -> str:
    """One line per exit: MMac, MMac with interpolation, parameters."""
    lines = [f"{'exit':>4}  {'MMac':>10}  {'MMac (true, +interp.)':>22}  {'params':>12}"]
    for n, (macs, true_macs, params) in enumerate(zip(costs.macs, costs.true_macs, costs.params), 1):
        lines.append(f"{n:>4}  {macs / 1e6:>10.2f}  {true_macs / 1e6:>22.2f}  {params:>12,}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse and check the flags, then build the model and print its per-exit costs."""
    request = parse_costs_args(argv, prog="op_counter.py")
    spec = request.model
    costs = spec.backbone.cost(spec.build(), spec.inputs)  # torch: only once the flags are checked
    if request.json:
        print(
            json_text({"macs": costs.macs, "params": costs.params, "true_macs": costs.true_macs}, indent=None)
        )
    else:
        print(format_table(costs))


if __name__ == "__main__":
    run_cli(main)
