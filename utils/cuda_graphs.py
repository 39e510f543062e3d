"""CUDA graphs captured per input signature and replayed for it; other calls run eagerly.

A graph reads its inputs from static buffers and writes its outputs into static buffers. A
:class:`ShapeGraphs` call names the graph it replays (by default the shapes of its tensors),
copies its tensors into that graph's input buffers (unless they already are them), replays,
and returns fresh copies of the outputs or the static outputs themselves. The training step,
the evaluation forward and the early-exit stages all replay through it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Hashable, Optional

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves, tree_map

WARMUP_CALLS = 3

KeyFn = Callable[..., Optional[Hashable]]


def require_cuda(
    device: torch.device, what: str, instead: str, error: type[Exception] = RuntimeError
) -> None:
    """CUDA graphs need a CUDA device: refuse `what` anywhere else, saying what to use `instead`."""
    if device.type != "cuda":
        raise error(f"{what} needs a CUDA device, this run uses {device}; {instead}")


def capture(run: Callable[[], object], warmup: int = WARMUP_CALLS) -> tuple[torch.cuda.CUDAGraph, object]:
    """Run `run` `warmup` times on a side stream, then capture one call as a CUDA graph.

    Thread-local capture, so a DataLoader's pin-memory thread may keep working meanwhile.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = run()
    return graph, outputs


def tensor_leaves(tree: object) -> list[Tensor]:
    """The tensors of a nested structure (tuples, lists, dicts, registered dataclasses), in a fixed order."""
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, Tensor)]


def signature(*args: object) -> tuple:
    """What one graph is captured for: the shape of every tensor of a call and its other leaves."""
    return tuple(tuple(leaf.shape) if isinstance(leaf, Tensor) else leaf for leaf in tree_leaves(args))


def fresh_copy(tree: object) -> object:
    """`tree` with every tensor cloned, so the next replay cannot overwrite what a caller holds."""
    return tree_map(lambda leaf: leaf.clone() if isinstance(leaf, Tensor) else leaf, tree)


@dataclass
class CapturedGraph:
    """One captured graph, the static tensors it reads and the static outputs it writes."""

    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]
    outputs: object


class ShapeGraphs:
    """`fn(*args)` replayed from CUDA graphs, one per key, each captured at its key's first call.

    `key(*args)` names the graph a call replays (default: :func:`signature`); None, or a new
    key once `max_graphs` are captured, runs `eager(*args)` instead. A replay whose tensors do
    not have the captured shapes is an error. Static input buffers are copies of the first
    call's tensors (on `device` if given), except tensors that already are some graph's static
    outputs: graphs fed by each other then chain without copies. `around_capture()` is a
    context entered around warm-up and capture (e.g. to undo what warm-up calls changed).
    """

    def __init__(
        self,
        fn: Callable,
        eager: Callable,
        key: KeyFn = signature,
        *,
        max_graphs: Optional[int] = None,
        copy_outputs: bool = True,
        device: Optional[torch.device] = None,
        around_capture: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.fn, self.eager, self.key = fn, eager, key
        self.max_graphs, self.copy_outputs, self.device = max_graphs, copy_outputs, device
        self.around_capture = around_capture
        self.graphs: dict[Hashable, CapturedGraph] = {}

    def __call__(self, *args: object) -> object:
        key = self.key(*args)
        if key not in self.graphs:
            if key is None or (self.max_graphs is not None and len(self.graphs) >= self.max_graphs):
                return self.eager(*args)
            self.graphs[key] = self._capture(args)
        outputs = self._replay(key, args)
        return fresh_copy(outputs) if self.copy_outputs else outputs

    def _capture(self, args: tuple) -> CapturedGraph:
        owned = {id(t) for graph in self.graphs.values() for t in tensor_leaves(graph.outputs)}
        static_args = tree_map(
            lambda leaf: (
                leaf if not isinstance(leaf, Tensor) or id(leaf) in owned else self._static_copy(leaf)
            ),
            args,
        )
        with self.around_capture():
            graph, outputs = capture(lambda: self.fn(*static_args))
        return CapturedGraph(graph, tensor_leaves(static_args), outputs)

    def _static_copy(self, tensor: Tensor) -> Tensor:
        return tensor.clone() if self.device is None else tensor.to(self.device, copy=True)

    def _replay(self, key: Hashable, args: tuple) -> object:
        captured = self.graphs[key]
        given = tensor_leaves(args)
        if [t.shape for t in captured.inputs] != [t.shape for t in given]:
            raise ValueError(
                f"the CUDA graph for key {key!r} was captured for inputs of shapes "
                f"{[tuple(t.shape) for t in captured.inputs]}, got "
                f"{[tuple(t.shape) for t in given]}"
            )
        for static, tensor in zip(captured.inputs, given):
            if static is not tensor:
                static.copy_(tensor, non_blocking=True)
        captured.graph.replay()
        return captured.outputs
