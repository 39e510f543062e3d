"""The one multi-exit interface every backbone implements.

A network with N exits is a chain of N stages. Stage n (0-based) advances the features
from exit n-1 to exit n (:meth:`MultiExitNetwork.advance`) and classifies them
(:meth:`MultiExitNetwork.classify`). Features are any nesting of lists/tuples/dicts of
tensors with the batch in dim 0, so an early-exit caller can drop finished samples between
stages with :func:`select_samples`. On top of this, one ``forward`` serves "all exits" and
"up to exit k", and :meth:`MultiExitNetwork.iter_exits` lets a caller stop when confident.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch import Tensor, nn
from torch.utils._pytree import tree_map

Features = Any


def select_samples(features: Features, index: Tensor) -> Features:
    """Keep only the samples `index` (indices or a boolean mask) of every tensor in `features`."""
    return tree_map(lambda t: t[index] if isinstance(t, Tensor) else t, features)


class MultiExitNetwork(nn.Module):
    """Base class: subclasses define `num_exits`, `stem`, `advance` and `classify`."""

    num_exits: int

    def stem(self, x: Tensor) -> Features:
        """Input image batch -> features entering stage 0."""
        raise NotImplementedError

    def advance(self, n: int, features: Features) -> Features:
        """Run the backbone part between exit n-1 and exit n (0-based n)."""
        raise NotImplementedError

    def classify(self, n: int, features: Features) -> Tensor:
        """Logits f_n of exit n (0-based) from the features `advance(n, ...)` returned."""
        raise NotImplementedError

    def forward(self, x: Tensor, max_exit: int | None = None) -> list[Tensor]:
        """Logits of exits 0..max_exit-1 (all exits when None); later blocks never run."""
        return [logits for logits, _ in self.iter_exits(x, max_exit)]

    def iter_exits(self, x: Tensor, max_exit: int | None = None) -> Iterator[tuple[Tensor, Features]]:
        """Yield (logits, features) exit by exit; stop iterating to skip the rest."""
        count = self.num_exits if max_exit is None else max_exit
        if not 1 <= count <= self.num_exits:
            raise ValueError(f"max_exit must be in 1..{self.num_exits}, got {max_exit}")
        features = self.stem(x)
        for n in range(count):
            features = self.advance(n, features)
            yield self.classify(n, features), features

    def stage_modules(self, n: int) -> list[nn.Module]:
        """Modules owned by stage n (its backbone part and head), for per-exit parameter groups."""
        raise NotImplementedError


def param_groups_by_stage(model: MultiExitNetwork) -> list[list[nn.Parameter]]:
    """Parameters grouped by stage; every parameter lands in exactly one group."""
    groups: list[list[nn.Parameter]] = []
    seen: set[int] = set()
    for n in range(model.num_exits):
        group = []
        for module in model.stage_modules(n):
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    group.append(p)
        groups.append(group)
    leftover = [p for p in model.parameters() if id(p) not in seen]
    groups[0].extend(leftover)
    return groups
