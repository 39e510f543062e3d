"""Budgeted-batch evaluation (docs/evaluation.md): the MSDNet protocol, vectorised and exact.

Probabilities are shaped exits x samples x classes. A sample's confidence at an exit is its
largest class probability; it leaves at the first exit whose threshold that confidence
reaches, and the last exit takes everyone left. Thresholds are fitted on the validation
split so that target shares of it leave at each exit, exactly as the original MSDNet
`dynamic_evaluate` does (its float32 exit fractions, its floor(V * p_n) quotas, ties
included), but for all budget levels at once and without loops over samples.

Accuracies equal the original's bit for bit (percent, computed in float64 from integer
counts, as it does); expected costs are computed in float64 rather than the original's
float32 accumulation, so they can differ from its printout in the last float32 digits.
Confidences are compared in the probabilities' dtype: the original stored float32
probabilities, so pass float32 to reproduce it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Iterable, Optional, Sequence, Union


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Say what this library module is and which programs run it (it has no command of its own)."""
    from utils.cli import OneLineParser

    parser = OneLineParser(
        prog="adaptive_inference.py",
        description=__doc__.splitlines()[0],
        epilog="This file is a library with no command of its own. The budgeted-batch "
        "evaluation runs in `python eval_cifar100.py --evaluate-from RUN_DIR --evalmode "
        "dynamic` (or eval_imagenet.py); see docs/evaluation.md.",
    )
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":  # the command is its help alone: answered before torch is imported
    main()
    raise SystemExit(0)

import torch  # noqa: E402  (after the command, which needs no torch)
from torch import Tensor  # noqa: E402

PROTOCOL_LEVELS = range(1, 40)
LEVEL_TO_RATIO = 20
MAX_SETTINGS_X_SAMPLES = 1 << 22

Costs = Union[Sequence[float], Tensor]


@dataclass
class BudgetLevel:
    """One budget level of the sweep: its thresholds and their validation and test outcome."""

    level: int
    q: float
    thresholds: list[float]
    val_accuracy: float
    val_expected_cost: float
    val_exit_counts: list[int]
    test_accuracy: float
    expected_cost: float
    exit_counts: list[int]
    accuracy_level: int

    def to_dict(self) -> dict:
        """Plain Python values (thresholds may be +/-inf: save them with utils.json_files)."""
        return asdict(self)


@dataclass
class BudgetChoice:
    """The most accurate validation setting within a budget; q = 0 / inf are the family's limits."""

    q: float
    thresholds: list[float]
    val_accuracy: float
    val_expected_cost: float
    val_exit_counts: list[int]

    def to_dict(self) -> dict:
        """Plain Python values (thresholds and q may be +/-inf: save them with utils.json_files)."""
        return asdict(self)


def exit_fractions(n_exits: int, k: float) -> Tensor:
    """Target exit shares p_n = q^n / sum_m q^m with q = k/20, in the original's float32 arithmetic."""
    return _family_fractions(n_exits, k / LEVEL_TO_RATIO)


def find_thresholds(val_probs: Tensor, fractions: Tensor) -> Tensor:
    """One threshold per exit so that floor(V * p_n) validation samples leave at exit n
    (docs/evaluation.md)."""
    _check_probs(val_probs, "val_probs")
    confidence = val_probs.max(dim=2).values
    fractions = _per_exit(fractions, confidence.shape[0], "fractions", torch.float32)
    quotas = _exit_quotas(fractions.unsqueeze(0), confidence.shape[1])
    return _thresholds(confidence, quotas)[0]


def apply_thresholds(
    probs: Tensor, targets: Tensor, thresholds: Union[Sequence[float], Tensor], costs: Costs
) -> tuple[float, float, Tensor]:
    """Accuracy (percent), expected cost and per-exit exit counts of early exit at `thresholds`."""
    confidence, correct = _scores(probs, targets, "probs")
    cost_per_exit = _per_exit_costs(costs, confidence.shape[0])
    exit_counts, n_correct = _outcomes(confidence, correct, _threshold_row(thresholds, confidence))
    n_samples = confidence.shape[1]
    expected_cost = _expected_costs(exit_counts, cost_per_exit, n_samples)[0].item()
    return _accuracy(n_correct[0], n_samples), expected_cost, exit_counts[0]


def exit_indices(probs: Tensor, thresholds: Union[Sequence[float], Tensor]) -> Tensor:
    """The exit (0-based) each sample leaves at under `thresholds`, as apply_thresholds decides it."""
    _check_probs(probs, "probs")
    confidence = probs.max(dim=2).values
    return _exit_indices(confidence, _threshold_row(thresholds, confidence))[0]


def budgeted_sweep(
    val_probs: Tensor,
    val_targets: Tensor,
    test_probs: Tensor,
    test_targets: Tensor,
    costs: Costs,
    flat_curve: bool = False,
    levels: Iterable[int] = PROTOCOL_LEVELS,
) -> list[BudgetLevel]:
    """The budgeted-batch protocol: thresholds per level on validation, applied to the test split."""
    val_confidence, val_correct = _scores(val_probs, val_targets, "val_probs")
    test_confidence, test_correct = _scores(test_probs, test_targets, "test_probs")
    n_exits = val_confidence.shape[0]
    if test_confidence.shape[0] != n_exits:
        raise ValueError(f"val_probs has {n_exits} exits but test_probs has {test_confidence.shape[0]}")
    cost_per_exit = _per_exit_costs(costs, n_exits)
    levels = list(levels)
    fractions = torch.stack([exit_fractions(n_exits, level) for level in levels])
    thresholds = _thresholds(val_confidence, _exit_quotas(fractions, val_confidence.shape[1]))
    val_counts, val_n_correct = _outcomes(val_confidence, val_correct, thresholds)
    test_counts, test_n_correct = _outcomes(test_confidence, test_correct, thresholds)
    n_val, n_test = val_confidence.shape[1], test_confidence.shape[1]
    val_costs = _expected_costs(val_counts, cost_per_exit, n_val).tolist()
    test_costs = _expected_costs(test_counts, cost_per_exit, n_test).tolist()
    points = [
        BudgetLevel(
            level=level,
            q=level / LEVEL_TO_RATIO,
            thresholds=thresholds[i].tolist(),
            val_accuracy=_accuracy(val_n_correct[i], n_val),
            val_expected_cost=val_costs[i],
            val_exit_counts=val_counts[i].tolist(),
            test_accuracy=_accuracy(test_n_correct[i], n_test),
            expected_cost=test_costs[i],
            exit_counts=test_counts[i].tolist(),
            accuracy_level=level,
        )
        for i, level in enumerate(levels)
    ]
    return _flattened(points) if flat_curve else points


def thresholds_for_budget(
    val_probs: Tensor,
    val_targets: Tensor,
    costs: Costs,
    budget: float,
    grid_size: int = 512,
    bisection_steps: int = 30,
) -> BudgetChoice:
    """The most accurate validation setting of the protocol's family whose validation cost is <= budget.

    The family is p_n proportional to q^n for q > 0, with its limits q = 0 (everyone leaves at
    exit 1) and q = inf (everyone runs to the last exit). Candidates: both limits, the 39
    protocol levels (so the choice is never worse than they are) and `grid_size` log-spaced q
    from 0.1/V to 10 V (beyond which the quotas floor(V * p_n) equal the limits'). The cost is
    only roughly monotone in q, so every grid step where it crosses the budget is then bisected
    on log q (`bisection_steps` halvings) to land on the boundary, where the most compute, and
    usually the best accuracy, is. Ties in accuracy go to the cheaper setting.
    """
    confidence, correct = _scores(val_probs, val_targets, "val_probs")
    n_exits, n_samples = confidence.shape
    candidates = _CandidateSet(confidence, correct, _per_exit_costs(costs, n_exits), budget)
    first = candidates.add(_search_ratios(n_exits, n_samples, grid_size))
    if not first.feasible.any():
        raise ValueError(
            f"budget {budget:.6g} is below the cheapest setting (every sample leaving at "
            f"exit 1), which costs {first.cost.min().item():.6g} on validation"
        )
    candidates.bisect_crossings(bisection_steps)
    return candidates.best()


@dataclass
class _Evaluated:
    """Outcomes on the validation split of a batch of settings q."""

    q: Tensor
    thresholds: Tensor
    exit_counts: Tensor
    n_correct: Tensor
    cost: Tensor
    feasible: Tensor


class _CandidateSet:
    """Settings q of the family evaluated on validation so far, and the search over them."""

    def __init__(self, confidence: Tensor, correct: Tensor, cost_per_exit: Tensor, budget: float):
        self.confidence, self.correct = confidence, correct
        self.cost_per_exit, self.budget = cost_per_exit, float(budget)
        self.batches: list[_Evaluated] = []

    def add(self, q: Tensor) -> _Evaluated:
        """Evaluate the settings q (in memory-bounded chunks) and keep them as candidates."""
        n_exits, n_samples = self.confidence.shape
        parts = []
        for q_part in q.split(max(1, MAX_SETTINGS_X_SAMPLES // n_samples)):
            fractions = torch.stack([_family_fractions(n_exits, value) for value in q_part.tolist()])
            thresholds = _thresholds(self.confidence, _exit_quotas(fractions, n_samples))
            parts.append((thresholds, *_outcomes(self.confidence, self.correct, thresholds)))
        thresholds, exit_counts, n_correct = (torch.cat(column) for column in zip(*parts))
        cost = _expected_costs(exit_counts, self.cost_per_exit, n_samples)
        evaluated = _Evaluated(q, thresholds, exit_counts, n_correct, cost, cost <= self.budget)
        self.batches.append(evaluated)
        return evaluated

    def bisect_crossings(self, steps: int) -> None:
        """Bisect log q on every step between neighbouring finite q where the cost crosses the budget."""
        evaluated = self._merged()
        finite = (evaluated.q > 0) & torch.isfinite(evaluated.q)
        log_q, feasible = evaluated.q[finite].log(), evaluated.feasible[finite]
        crossing = feasible[:-1] & ~feasible[1:]
        if not crossing.any():
            return
        low, high = log_q[:-1][crossing], log_q[1:][crossing]
        for _ in range(steps):
            middle = (low + high) / 2
            inside = self.add(middle.exp()).feasible
            low, high = torch.where(inside, middle, low), torch.where(inside, high, middle)

    def best(self) -> BudgetChoice:
        """The feasible candidate with the most correct validation samples, the cheapest on ties."""
        evaluated = self._merged()
        n_correct = evaluated.n_correct.masked_fill(~evaluated.feasible, -1)
        cost = evaluated.cost.masked_fill(n_correct != n_correct.max(), math.inf)
        pick = cost.argmin()
        return BudgetChoice(
            q=evaluated.q[pick].item(),
            thresholds=evaluated.thresholds[pick].tolist(),
            val_accuracy=_accuracy(evaluated.n_correct[pick], self.confidence.shape[1]),
            val_expected_cost=evaluated.cost[pick].item(),
            val_exit_counts=evaluated.exit_counts[pick].tolist(),
        )

    def _merged(self) -> _Evaluated:
        """All candidates so far, sorted by q."""
        names = [field.name for field in fields(_Evaluated)]
        merged = {name: torch.cat([getattr(batch, name) for batch in self.batches]) for name in names}
        order = merged["q"].argsort()
        return _Evaluated(**{name: merged[name][order] for name in names})


def _search_ratios(n_exits: int, n_samples: int, grid_size: int) -> Tensor:
    """Both limits, the protocol's q = k/20 and a log grid from 0.1/V to 10 V (where q^N fits float32)."""
    protocol = torch.tensor([level / LEVEL_TO_RATIO for level in PROTOCOL_LEVELS], dtype=torch.float64)
    grid = torch.logspace(
        math.log10(0.1 / n_samples), math.log10(10.0 * n_samples), grid_size, dtype=torch.float64
    )
    largest_finite = torch.finfo(torch.float32).max ** (1.0 / n_exits) / 2
    limits = torch.tensor([0.0, math.inf], dtype=torch.float64)
    return torch.cat([limits, protocol, grid[grid < largest_finite]])


def _family_fractions(n_exits: int, q: float) -> Tensor:
    """p_n proportional to q^n as the original builds it: exp(log q * n) in float32, normalised."""
    if q == 0 or math.isinf(q):
        return torch.nn.functional.one_hot(torch.tensor(0 if q == 0 else n_exits - 1), n_exits).float()
    ratio = torch.full((1,), q, dtype=torch.float32)
    powers = torch.exp(torch.log(ratio) * torch.arange(1, n_exits + 1, dtype=torch.float32))
    return powers / powers.sum()


def _exit_quotas(fractions: Tensor, n_samples: int) -> Tensor:
    """floor(V * p_n) with the product in float32, as the original's `n_sample * p[k]`."""
    return torch.floor(fractions.float() * n_samples).long()


def _thresholds(confidence: Tensor, quotas: Tensor) -> Tensor:
    """Thresholds (settings x exits) for quota rows (settings x exits) on confidences (exits x samples).

    For exit n, the threshold is the confidence of the quota-th not-yet-exited sample in
    descending confidence order (+inf when the quota is 0 or not reached); every sample at
    or above it leaves. One argsort per exit serves all settings: a cumulative count of the
    samples still present along that order locates the quota-th of them.
    """
    n_exits, n_samples = confidence.shape
    n_settings = quotas.shape[0]
    order = confidence.argsort(dim=1, descending=True)
    ranked = confidence.gather(1, order)
    thresholds = torch.full((n_settings, n_exits), math.inf, dtype=confidence.dtype, device=confidence.device)
    present = torch.ones(n_settings, n_samples, dtype=torch.bool, device=confidence.device)
    for n in range(n_exits - 1):
        present_so_far = present[:, order[n]].cumsum(dim=1)
        quota = quotas[:, n : n + 1].contiguous().to(confidence.device)
        place = torch.searchsorted(present_so_far, quota).clamp(max=n_samples - 1)
        reached = (quota >= 1) & (quota <= present_so_far[:, -1:])
        thresholds[:, n : n + 1] = torch.where(reached, ranked[n][place], math.inf)
        present &= confidence[n] < thresholds[:, n : n + 1]
    thresholds[:, -1] = -math.inf
    return thresholds


def _threshold_row(thresholds: Union[Sequence[float], Tensor], confidence: Tensor) -> Tensor:
    """One setting's thresholds as a 1 x exits row in the confidences' dtype and device."""
    row = _per_exit(thresholds, confidence.shape[0], "thresholds", confidence.dtype)
    return row.to(confidence.device).unsqueeze(0)


def _exit_indices(confidence: Tensor, thresholds: Tensor) -> Tensor:
    """Per setting and sample (settings x samples), the first exit whose threshold the sample's
    confidence reaches; the last exit takes everyone left."""
    n_exits, n_samples = confidence.shape
    exit_index = torch.full((thresholds.shape[0], n_samples), n_exits - 1, device=confidence.device)
    for n in reversed(range(n_exits - 1)):
        exit_index = torch.where(confidence[n] >= thresholds[:, n : n + 1], n, exit_index)
    return exit_index


def _outcomes(confidence: Tensor, correct: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Per-setting exit counts (settings x exits) and numbers of correct predictions (settings)."""
    n_exits, n_samples = confidence.shape
    exit_index = _exit_indices(confidence, thresholds)
    exit_counts = torch.zeros(thresholds.shape[0], n_exits, dtype=torch.long, device=confidence.device)
    exit_counts.scatter_add_(1, exit_index, torch.ones_like(exit_index))
    n_correct = correct[exit_index, torch.arange(n_samples, device=confidence.device)].sum(dim=1)
    return exit_counts.cpu(), n_correct.cpu()


def _flattened(points: list[BudgetLevel]) -> list[BudgetLevel]:
    """The flat curve (docs/evaluation.md): a level not above the best validation accuracy so
    far reports the best's."""
    flat, best = [], None
    for point in points:
        if best is None or point.val_accuracy > best.val_accuracy:
            best = point
        flat.append(
            replace(
                point,
                val_accuracy=best.val_accuracy,
                test_accuracy=best.test_accuracy,
                accuracy_level=best.level,
            )
        )
    return flat


def _scores(probs: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Per-exit confidence (top class probability) and whether the top class is the target."""
    _check_probs(probs, name)
    targets = torch.as_tensor(targets, device=probs.device).long()
    if targets.shape != probs.shape[1:2]:
        raise ValueError(
            f"{name} has {probs.shape[1]} samples but its targets have shape {tuple(targets.shape)}"
        )
    confidence, prediction = probs.max(dim=2)
    return confidence, prediction == targets


def _check_probs(probs: Tensor, name: str) -> None:
    """Reject probabilities that are not a non-empty exits x samples x classes tensor."""
    if probs.dim() != 3 or 0 in probs.shape:
        raise ValueError(
            f"{name} must be a non-empty exits x samples x classes tensor, got shape {tuple(probs.shape)}"
        )


def _per_exit_costs(costs: Costs, n_exits: int) -> Tensor:
    """Per-exit costs as float64 on the CPU."""
    return _per_exit(costs, n_exits, "costs", torch.float64).cpu()


def _per_exit(values: Union[Sequence[float], Tensor], n_exits: int, name: str, dtype: torch.dtype) -> Tensor:
    """One value per exit as a flat tensor of `dtype`, or a ValueError naming `name`."""
    vector = torch.as_tensor(values, dtype=dtype).flatten()
    if vector.numel() != n_exits:
        raise ValueError(f"{name} has {vector.numel()} entries for {n_exits} exits")
    return vector


def _accuracy(n_correct: Tensor, n_samples: int) -> float:
    """Percent correct, computed as the original does (int * 100.0 / n)."""
    return int(n_correct) * 100.0 / n_samples


def _expected_costs(exit_counts: Tensor, cost_per_exit: Tensor, n_samples: int) -> Tensor:
    """sum_n (share leaving at n) * cost_n for each row of exit counts, in float64."""
    return (exit_counts.double() * cost_per_exit).sum(dim=1) / n_samples
