"""`python -m utils.plots`: figures and a Markdown table of evaluated runs (the command; the
plotting itself is boostnet/reporting/plots.py).

    python -m utils.plots runs/boostnet runs/msdnet_joint --out results/plots --reference msdnet_c100
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from boostnet.reporting.plots import FORMATS, REFERENCES, write_plots
from utils.cli import OneLineParser
from utils.errors import run_cli

DESCRIPTION = (
    "Accuracy against multiply-adds for evaluated runs: anytime and budgeted figures and a Markdown table."
)


def plot_parser() -> OneLineParser:
    """The command line of `python -m utils.plots`, every flag with its help."""
    parser = OneLineParser(
        prog="python -m utils.plots",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="evaluated run directories (their anytime.json and/or budgeted.json)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for anytime.*, budgeted.* (one file per --format) and results.md",
    )
    parser.add_argument(
        "--reference",
        choices=sorted(REFERENCES),
        default=None,
        help="overlay published accuracies on the anytime plot (msdnet_c100: "
        "CIFAR-100's, only for runs evaluated on cifar100)",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="one distinct label per run, in order, for the legends and tables "
        "(None: the run directories' names)",
    )
    parser.add_argument(
        "--title",
        default=None,
        help="heading of the figures (before the plot's kind) and of results.md "
        "(None: the plot's kind, and 'Results'); the dataset, split and sample "
        "count are always added",
    )
    parser.add_argument(
        "--format",
        nargs="+",
        choices=FORMATS,
        default=["png"],
        dest="formats",
        help="figure file formats, one or more",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the flags, then write the figures and results.md."""
    options = plot_parser().parse_args(argv)
    written = write_plots(
        options.runs, options.out, options.reference, options.labels, options.title, options.formats
    )
    print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
