"""Budgeted-batch protocol (docs/evaluation.md): the vectorised code equals a plain loop copy of
the original."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from adaptive_inference import (
    BudgetLevel,
    apply_thresholds,
    budgeted_sweep,
    exit_fractions,
    find_thresholds,
    thresholds_for_budget,
)


def original_fractions(n_blocks, p):
    """MSDNet's `dynamic_evaluate` exit shares, verbatim (torch.range included)."""
    _p = torch.FloatTensor(1).fill_(p * 1.0 / 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = torch.exp(torch.log(_p) * torch.range(1, n_blocks))
    probs /= probs.sum()
    return probs


def original_with_threshold(max_preds, argmax_preds, targets, macs, T):
    """MSDNet's `dynamic_eval_with_threshold` loop over samples; also returns the exit counts."""
    n_stage, n_sample = len(max_preds), len(targets)
    exp = torch.zeros(n_stage)
    acc, expected_macs = 0, 0
    for i in range(n_sample):
        for k in range(n_stage):
            if max_preds[k][i] >= T[k]:
                if targets[i] == argmax_preds[k][i]:
                    acc += 1
                exp[k] += 1
                break
    for k in range(n_stage):
        _t = 1.0 * exp[k] / n_sample
        expected_macs += _t * macs[k]
    return acc * 100.0 / n_sample, float(expected_macs), [int(e) for e in exp]


def original_find_threshold(logits, targets, p, macs):
    """MSDNet's `dynamic_eval_find_threshold` loop, on Python lists of the same float32 values."""
    n_stage, n_sample, _ = logits.size()
    max_preds, argmax_preds = logits.max(dim=2, keepdim=False)
    _, sorted_idx = max_preds.sort(dim=1, descending=True)
    max_preds, argmax_preds, sorted_idx = max_preds.tolist(), argmax_preds.tolist(), sorted_idx.tolist()
    filtered = [0] * n_sample
    T = [1e8] * n_stage
    for k in range(n_stage - 1):
        count = 0
        out_n = math.floor(n_sample * p[k])
        for i in range(n_sample):
            ori_idx = sorted_idx[k][i]
            if filtered[ori_idx] == 0:
                count += 1
                if count == out_n:
                    T[k] = max_preds[k][ori_idx]
                    break
        for i in range(n_sample):
            filtered[i] += max_preds[k][i] >= T[k]
    T[n_stage - 1] = -1e8
    acc, expected_macs, counts = original_with_threshold(max_preds, argmax_preds, targets.tolist(), macs, T)
    return acc, expected_macs, counts, T


def original_sweep(val_pred, val_target, test_pred, test_target, macs, flat_curve):
    """The 39-level loop of `dynamic_evaluate`, with the flat curve of docs/evaluation.md written
    out plainly."""
    rows, best_val, best_test = [], -1.0, None
    test_max, test_argmax = (t.tolist() for t in test_pred.max(dim=2))
    for p in range(1, 40):
        probs = original_fractions(val_pred.shape[0], p)
        acc_val, val_macs, val_counts, T = original_find_threshold(val_pred, val_target, probs, macs)
        acc_test, exp_macs, counts = original_with_threshold(
            test_max, test_argmax, test_target.tolist(), macs, T
        )
        if flat_curve:
            if acc_val > best_val:
                best_val, best_test = acc_val, acc_test
            else:
                acc_val, acc_test = best_val, best_test
        thresholds = [math.inf if t == 1e8 else -math.inf if t == -1e8 else t for t in T]
        rows.append(
            dict(
                thresholds=thresholds,
                val_accuracy=acc_val,
                val_expected_cost=val_macs,
                val_exit_counts=val_counts,
                test_accuracy=acc_test,
                expected_cost=exp_macs,
                exit_counts=counts,
            )
        )
    return rows


def make_split(n_exits, n_samples, n_classes, seed, levels_of_quantisation=None):
    """Softmax outputs that sharpen towards the target with the exit index; optionally quantised."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, n_classes, (n_samples,), generator=g)
    logits = torch.randn(n_exits, n_samples, n_classes, generator=g)
    signal = torch.linspace(0.5, 3.0, n_exits).view(n_exits, 1, 1) * torch.rand(1, n_samples, 1, generator=g)
    logits += signal * 2 * torch.nn.functional.one_hot(targets, n_classes)
    probs = logits.softmax(dim=2)
    if levels_of_quantisation:
        probs = (probs * levels_of_quantisation).round() / levels_of_quantisation
    return probs.float(), targets


def costs_for(n_exits):
    return [1e6 * (n + 1) + 12345.5 * n * n for n in range(n_exits)]


def assert_sweep_matches_original(val, test, flat_curve=False):
    n_exits = val[0].shape[0]
    costs = costs_for(n_exits)
    ours = budgeted_sweep(*val, *test, costs, flat_curve=flat_curve)
    reference = original_sweep(*val, *test, costs, flat_curve)
    assert [point.level for point in ours] == list(range(1, 40))
    for point, expected in zip(ours, reference):
        assert point.thresholds == expected["thresholds"]
        for key in ("val_accuracy", "test_accuracy", "val_exit_counts", "exit_counts"):
            assert getattr(point, key) == expected[key], (point.level, key)
        assert point.val_expected_cost == pytest.approx(expected["val_expected_cost"], rel=1e-6)
        assert point.expected_cost == pytest.approx(expected["expected_cost"], rel=1e-6)
    return ours


@pytest.mark.parametrize(
    "n_exits, n_val, n_test, n_classes, quantisation, seed",
    [
        (7, 300, 200, 10, None, 0),  # plain random outputs
        (5, 250, 150, 6, 8, 1),  # coarse quantisation: many equal confidences and class ties
        (12, 200, 120, 5, None, 2),  # many exits, most of them empty at low budgets
        (1, 50, 40, 4, None, 3),  # a single exit
        (4, 7, 9, 3, 4, 4),  # V = 7: floor(V * p_n) is 0 for most exits and levels
    ],
)
def test_sweep_equals_original_protocol(n_exits, n_val, n_test, n_classes, quantisation, seed):
    val = make_split(n_exits, n_val, n_classes, seed, quantisation)
    test = make_split(n_exits, n_test, n_classes, seed + 100, quantisation)
    points = assert_sweep_matches_original(val, test)
    assert all(point.thresholds[-1] == -math.inf for point in points)
    if n_exits > 1:
        assert any(math.isinf(t) and t > 0 for point in points for t in point.thresholds)


def test_ties_leave_later_exits_unreached():
    val = make_split(4, 120, 5, seed=5)
    test = make_split(4, 80, 5, seed=6)
    val[0][0] = 0.5  # every validation sample is equally confident at exit 1, so all leave there
    points = assert_sweep_matches_original(val, test)
    for point in points:
        assert point.val_exit_counts == [120, 0, 0, 0]
        assert point.thresholds[:3] == [0.5, math.inf, math.inf]


def test_flat_curve_equals_original_protocol():
    val = make_split(6, 200, 8, seed=7, levels_of_quantisation=16)
    test = make_split(6, 150, 8, seed=8, levels_of_quantisation=16)
    flat = assert_sweep_matches_original(val, test, flat_curve=True)
    plain = budgeted_sweep(*val, *test, costs_for(6))
    assert any(f.accuracy_level != f.level for f in flat)
    for f, p in zip(flat, plain):
        assert (f.thresholds, f.exit_counts) == (p.thresholds, p.exit_counts)
        assert (f.val_expected_cost, f.expected_cost) == (p.val_expected_cost, p.expected_cost)
        source = plain[f.accuracy_level - 1]
        assert (f.val_accuracy, f.test_accuracy) == (source.val_accuracy, source.test_accuracy)


def test_exit_fractions_are_the_originals_float32_values():
    for n_exits in (1, 2, 5, 7, 12):
        for k in range(1, 40):
            fractions = exit_fractions(n_exits, k)
            assert fractions.dtype == torch.float32
            assert torch.equal(fractions, original_fractions(n_exits, k))
            assert fractions.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_find_and_apply_thresholds_match_original_single_level():
    probs, targets = make_split(5, 180, 7, seed=9, levels_of_quantisation=10)
    costs = costs_for(5)
    fractions = exit_fractions(5, 17)
    acc, cost, counts, T = original_find_threshold(probs, targets, fractions, costs)
    thresholds = find_thresholds(probs, fractions)
    assert thresholds.tolist() == [math.inf if t == 1e8 else -math.inf if t == -1e8 else t for t in T]
    accuracy, expected_cost, exit_counts = apply_thresholds(probs, targets, thresholds, costs)
    assert (accuracy, exit_counts.tolist()) == (acc, counts)
    assert expected_cost == pytest.approx(cost, rel=1e-6)


def test_record_is_json_friendly():
    val, test = make_split(3, 40, 4, seed=10), make_split(3, 30, 4, seed=11)
    point = budgeted_sweep(*val, *test, costs_for(3), levels=[20])[0]
    assert isinstance(point, BudgetLevel)
    record = point.to_dict()
    assert set(record) >= {
        "level",
        "thresholds",
        "val_accuracy",
        "test_accuracy",
        "expected_cost",
        "exit_counts",
    }
    assert all(isinstance(t, float) for t in record["thresholds"])
    assert all(isinstance(c, int) for c in record["exit_counts"]) and sum(record["exit_counts"]) == 30


@pytest.mark.parametrize("n_exits, seed", [(7, 12), (4, 13), (1, 14)])
def test_budget_search_meets_budget_and_beats_protocol_points(n_exits, seed):
    val_probs, val_targets = make_split(n_exits, 400, 10, seed=seed, levels_of_quantisation=50)
    costs = costs_for(n_exits)
    protocol = budgeted_sweep(val_probs, val_targets, val_probs, val_targets, costs)
    for share in (0.0, 0.1, 0.25, 0.5, 0.8, 1.0):
        budget = costs[0] + share * (costs[-1] - costs[0])
        choice = thresholds_for_budget(val_probs, val_targets, costs, budget)
        accuracy, cost, counts = apply_thresholds(val_probs, val_targets, choice.thresholds, costs)
        assert cost <= budget
        assert (accuracy, cost, counts.tolist()) == (
            choice.val_accuracy,
            choice.val_expected_cost,
            choice.val_exit_counts,
        )
        affordable = [p.val_accuracy for p in protocol if p.val_expected_cost <= budget]
        assert choice.val_accuracy >= max(affordable, default=-1.0)


def test_budget_search_beats_protocol_between_its_points():
    val_probs, _ = make_split(6, 400, 10, seed=15)
    last_exit_is_right = val_probs[-1].argmax(dim=1)  # so accuracy grows with the compute spent
    costs = costs_for(6)
    protocol = budgeted_sweep(val_probs, last_exit_is_right, val_probs, last_exit_is_right, costs)
    budget = (protocol[9].val_expected_cost + protocol[10].val_expected_cost) / 2
    choice = thresholds_for_budget(val_probs, last_exit_is_right, costs, budget)
    assert protocol[9].val_expected_cost < choice.val_expected_cost <= budget
    assert choice.val_accuracy > max(p.val_accuracy for p in protocol if p.val_expected_cost <= budget)


def test_budget_below_cheapest_setting_is_rejected():
    val_probs, val_targets = make_split(3, 50, 4, seed=16)
    costs = costs_for(3)
    with pytest.raises(ValueError, match="cheapest setting"):
        thresholds_for_budget(val_probs, val_targets, costs, costs[0] - 1)
    choice = thresholds_for_budget(val_probs, val_targets, costs, costs[0])
    assert choice.val_exit_counts == [50, 0, 0] and choice.val_expected_cost == costs[0]


def test_bad_shapes_are_rejected():
    probs, targets = make_split(3, 20, 4, seed=17)
    with pytest.raises(ValueError, match="exits x samples x classes"):
        find_thresholds(probs[0], exit_fractions(3, 5))
    with pytest.raises(ValueError, match="targets"):
        apply_thresholds(probs, targets[:5], [0.5, 0.5, -math.inf], costs_for(3))
    with pytest.raises(ValueError, match="costs"):
        budgeted_sweep(probs, targets, probs, targets, costs_for(2))
