"""The boosted objective of SPEC §1: value, gradient isolation, train/eval agreement."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from args import parse_args
from models import build_model
from models.boosting import ExitObjective, additive_outputs, reweight_factors
from tests.conftest import TINY_MSDNET


def _logits(n_exits=4, batch=5, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, classes, generator=g, requires_grad=True) for _ in range(n_exits)]


def test_reweight_expansion():
    assert reweight_factors([0.5], 3) == [0.5, 0.5, 0.5]
    assert reweight_factors([0.0, 1.0], 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert reweight_factors([0.1, 0.2, 0.3], 3) == [0.1, 0.2, 0.3]


def test_boosted_loss_equals_spec_formula():
    logits, target = _logits(), torch.tensor([0, 1, 2, 3, 4])
    r = [0.3, 0.4, 0.6, 0.9]
    total, per_exit, _ = ExitObjective(4, boosted=True, reweight=r)(logits, target)
    expected, ensemble = [], torch.zeros_like(logits[0])
    for n, f in enumerate(logits):
        ensemble = f + (r[n] * ensemble if n else 0)
        expected.append(F.cross_entropy(ensemble, target))
    torch.testing.assert_close(per_exit, torch.stack(expected).detach())
    torch.testing.assert_close(total, sum(expected))


def test_joint_loss_is_sum_of_plain_cross_entropies():
    logits, target = _logits(), torch.tensor([0, 1, 2, 3, 4])
    objective = ExitObjective(4, boosted=False)
    total, _, outputs = objective(logits, target)
    torch.testing.assert_close(total, sum(F.cross_entropy(f, target) for f in logits))
    assert all(a is b for a, b in zip(objective.outputs(logits), logits))


def test_loss_n_sends_no_gradient_into_earlier_heads():
    torch.manual_seed(0)
    model = build_model(parse_args(TINY_MSDNET))
    objective = ExitObjective(model.num_exits, boosted=True, reweight=[0.5])
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))
    _, _, outputs = objective(model(x), y)
    last = model.num_exits - 1
    F.cross_entropy(outputs[last], y).backward()
    for n in range(last):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.heads[n].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.heads[last].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())


def test_train_time_outputs_equal_eval_time_outputs_with_varying_reweights():
    logits, target = _logits(n_exits=5), torch.tensor([0, 1, 2, 3, 4])
    objective = ExitObjective(5, boosted=True, reweight=[0.2, 1.0])
    _, _, train_outputs = objective(logits, target)
    eval_outputs = objective.outputs(logits)
    for a, b in zip(train_outputs, eval_outputs):
        assert torch.equal(a, b)
    assert torch.equal(eval_outputs[2], additive_outputs(logits, objective.factors)[2])
    assert objective.factors[1] != objective.factors[4]


def test_loss_equalisation_uses_running_average_weights():
    logits, target = _logits(n_exits=3), torch.tensor([0, 1, 2, 3, 4])
    objective = ExitObjective(3, boosted=True, loss_equal=True)
    first_total, first_losses, _ = objective(logits, target)
    torch.testing.assert_close(objective.loss_ema, first_losses)
    torch.testing.assert_close(first_total, first_losses.mean() * 3)  # equal weights at start
    scaled = [f * 2 for f in logits]
    total, losses, _ = objective(scaled, target)
    ema = 0.9 * first_losses + 0.1 * losses
    torch.testing.assert_close(objective.loss_ema, ema)
    torch.testing.assert_close(total, (losses * ema.mean() / ema).sum())
