"""ECE and NLL equal plain references on hand-made inputs (calibrated, over-confident, one bin,
bin edges) and on random ones, exit by exit; early exit's per-sample exit equals a loop."""

from __future__ import annotations

import math

import pytest
import torch

from adaptive_inference import apply_thresholds, exit_indices
from tests.reference_metrics import reference_ece, reference_exits, reference_nll
from utils.metrics import ECE_BINS, expected_calibration_error, negative_log_likelihood

CLASSES = 5


def with_confidence(groups: list[tuple[float, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One exit (1 x samples x CLASSES): per group (confidence, samples, how many correct), the
    top class 0 gets the confidence and the others share the rest; wrong samples' target is 1."""
    rows, targets = [], []
    for confidence, samples, correct in groups:
        rest = (1 - confidence) / (CLASSES - 1)
        rows += [[confidence] + [rest] * (CLASSES - 1)] * samples
        targets += [0] * correct + [1] * (samples - correct)
    return torch.tensor([rows], dtype=torch.float64), torch.tensor(targets)


def ece(groups: list[tuple[float, int, int]], bins: int = ECE_BINS) -> float:
    return expected_calibration_error(*with_confidence(groups), bins=bins)[0]


def test_fifteen_bins_are_the_default():
    assert ECE_BINS == 15


def test_perfectly_calibrated_inputs_have_zero_ece():
    assert ece([(0.8, 10, 8)]) == pytest.approx(0.0, abs=1e-12)
    assert ece([(0.8, 10, 8), (0.6, 5, 3), (0.25, 4, 1), (1.0, 3, 3)]) == pytest.approx(0.0, abs=1e-12)


def test_over_confident_inputs():
    assert ece([(0.9, 10, 5)]) == pytest.approx(0.4, abs=1e-12)
    # 4/10 * |0.5 - 0.95| + 6/10 * |0.5 - 0.55| in bins 15 and 9
    assert ece([(0.95, 4, 2), (0.55, 6, 3)]) == pytest.approx(0.18 + 0.03, abs=1e-12)


def test_samples_in_one_bin_give_the_gap_of_their_means():
    groups = [(0.61, 1, 1), (0.62, 1, 0), (0.65, 1, 1), (0.66, 1, 1)]  # all in (9/15, 10/15]
    assert ece(groups) == pytest.approx(abs(0.75 - (0.61 + 0.62 + 0.65 + 0.66) / 4), abs=1e-12)
    spread = [(0.3, 3, 0), (0.7, 2, 2), (0.99, 5, 4)]
    assert ece(spread, bins=1) == pytest.approx(abs(6 / 10 - (0.9 + 1.4 + 4.95) / 10), abs=1e-12)


def test_bins_are_right_closed():
    # 12/15 = 0.8 belongs with 0.75 in (11/15, 12/15]; left-closed bins would give 0.475
    assert ece([(12 / 15, 1, 1), (0.75, 1, 0)]) == pytest.approx(abs(0.5 - (0.8 + 0.75) / 2), abs=1e-12)
    # 1.0 is in the last bin, with 0.95
    assert ece([(1.0, 1, 0), (0.95, 1, 1)]) == pytest.approx(abs(0.5 - 0.975), abs=1e-12)


def random_probs(seed: int, exits: int = 3, samples: int = 200, classes: int = 7):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(exits, samples, classes, generator=generator) * torch.linspace(0.5, 4, exits).view(
        -1, 1, 1
    )
    return logits.softmax(dim=2), torch.randint(classes, (samples,), generator=generator)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_exit_values_equal_plain_loops(seed):
    probs, targets = random_probs(seed)
    rows, labels = probs.double().tolist(), targets.tolist()
    tiny = torch.finfo(probs.dtype).tiny
    assert expected_calibration_error(probs, targets) == pytest.approx(
        [reference_ece(exit_rows, labels) for exit_rows in rows], rel=1e-9, abs=1e-12
    )
    assert negative_log_likelihood(probs, targets) == pytest.approx(
        [reference_nll(exit_rows, labels, tiny) for exit_rows in rows], rel=1e-12
    )


def test_nll_by_hand_and_finite_for_a_zero_probability():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.9, 0.0], [1.0, 0.0, 0.0]]])
    targets = torch.tensor([0, 1, 2])
    tiny = torch.finfo(torch.float32).tiny
    expected = (-math.log(0.5) - math.log(float(torch.tensor(0.9))) - math.log(tiny)) / 3
    assert negative_log_likelihood(probs, targets) == pytest.approx([expected], rel=1e-12)
    assert math.isfinite(negative_log_likelihood(probs, targets)[0])


@pytest.mark.parametrize(
    "thresholds",
    [[0.5, 0.6, -math.inf], [math.inf, math.inf, -math.inf], [0.0, 0.9, -math.inf], [0.95, 0.3, -math.inf]],
)
def test_exit_indices_equal_a_loop_and_the_exit_counts(thresholds):
    probs, targets = random_probs(2)
    exits = exit_indices(probs, thresholds)
    assert exits.tolist() == reference_exits(probs, thresholds)
    counts = apply_thresholds(probs, targets, thresholds, [1, 2, 3])[2]
    assert torch.bincount(exits, minlength=3).tolist() == counts.tolist()
