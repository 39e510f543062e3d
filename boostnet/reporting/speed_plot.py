"""Measured against promised speed-up of real early exit: one curve per backend and batch size,
dotted beside it what the stages' measured latencies promise, and the diagonal where the runtime
delivers exactly what the MAC count promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def write_speed_plot(path: Path, rows: Sequence[dict[str, Any]], title: str) -> None:
    """Rows of boostnet/deployment/speed.py as measured (y) against promised (x) speed-up."""
    import matplotlib  # here: importing matplotlib takes a second the rows need not pay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    groups = sorted({(row["backend"], row["batch_size"]) for row in rows})
    for backend, batch_size in groups:
        chosen = sorted((r for r in rows if (r["backend"], r["batch_size"]) == (backend, batch_size)),
                        key=lambda r: r["promised_speedup"])  # fmt: skip
        label = f"{backend}, batch {batch_size}"
        promised = [r["promised_speedup"] for r in chosen]
        (line,) = axes.plot(promised, [r["measured_speedup"] for r in chosen], marker="o", label=label)
        by_latency = [(x, r["latency_promised_speedup"]) for x, r in zip(promised, chosen)
                      if r["latency_promised_speedup"] is not None]  # fmt: skip
        if by_latency:
            axes.plot(*zip(*by_latency), marker="o", markerfacecolor="none", linestyle=":",
                      color=line.get_color(), label=f"{label}: by stage latency")  # fmt: skip
    top = max([1.0] + [max(r["promised_speedup"], r["measured_speedup"]) for r in rows]) * 1.05
    axes.plot([1, top], [1, top], color="grey", linestyle="--", label="measured = promised")
    axes.set(title=title, xlabel="promised speed-up (full MACs / expected MACs)",
             ylabel="measured speed-up (images/s vs full network)")  # fmt: skip
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
