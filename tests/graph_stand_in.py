"""A CPU stand-in for CUDA-graph capture, so the bookkeeping around graphs is tested without a GPU."""

from __future__ import annotations

from typing import Callable

from utils.cuda_graphs import tensor_leaves


class ReplayedGraph:
    """CPU stand-in for a captured CUDA graph: replay reruns the call, writing into the outputs
    of the capture in place, as a real replay overwrites its static output buffers."""

    def __init__(self, run: Callable[[], object]):
        self.run = run
        self.outputs = run()

    def replay(self) -> None:
        for static, fresh in zip(tensor_leaves(self.outputs), tensor_leaves(self.run())):
            static.copy_(fresh)


def fake_capture(run: Callable[[], object], warmup: int = 3) -> tuple[ReplayedGraph, object]:
    """What utils.cuda_graphs.capture returns, without warm-up: a graph and its static outputs."""
    graph = ReplayedGraph(run)
    return graph, graph.outputs
