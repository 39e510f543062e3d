"""The boosted network and its losses (docs/method.md): value, gradient isolation, train/eval agreement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from args import parse_args
from models.boosting import BoostedNetwork, ExitObjective, reweight_factors
from models.objectives import ObjectiveConfig
from tests.conftest import TINY_MSDNET
from tests.run_fixtures import boosted_recurrence, network_of


def _logits(n_exits=4, batch=5, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, classes, generator=g, requires_grad=True) for _ in range(n_exits)]


def on_logits(factors) -> BoostedNetwork:
    """A BoostedNetwork whose 'backbone' passes per-exit logits through: the ensemble alone."""
    return BoostedNetwork(nn.Identity(), factors)


def test_reweight_expansion():
    assert reweight_factors([0.5], 3) == [0.5, 0.5, 0.5]
    assert reweight_factors([0.0, 1.0], 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert reweight_factors([0.1, 0.2, 0.3], 3) == [0.1, 0.2, 0.3]


def test_objective_settings_build_the_network_and_losses_their_loss_names():
    boost = ObjectiveConfig("boost", reweight=(0.2, 1.0), loss_equal=True).network(nn.Identity(), 5)
    assert boost.factors == reweight_factors([0.2, 1.0], 5)
    assert ObjectiveConfig("joint").network(nn.Identity(), 5).factors is None
    losses = ObjectiveConfig("boost", loss_equal=True, smoothing=0.1).loss(4)
    assert (len(losses.loss_ema), losses.loss_equal, losses.smoothing) == (4, True, 0.1)


def test_boosted_loss_equals_spec_formula():
    logits, target = _logits(), torch.tensor([0, 1, 2, 3, 4])
    r = [0.3, 0.4, 0.6, 0.9]
    total, per_exit = ExitObjective(4)(on_logits(r).training_outputs(logits), target)
    expected, ensemble = [], torch.zeros_like(logits[0])
    for n, f in enumerate(logits):
        ensemble = f + (r[n] * ensemble if n else 0)
        expected.append(F.cross_entropy(ensemble, target))
    torch.testing.assert_close(per_exit, torch.stack(expected).detach())
    torch.testing.assert_close(total, sum(expected))


def test_joint_loss_is_sum_of_plain_cross_entropies():
    logits, target = _logits(), torch.tensor([0, 1, 2, 3, 4])
    joint = on_logits(None)
    total, _ = ExitObjective(4)(joint.training_outputs(logits), target)
    torch.testing.assert_close(total, sum(F.cross_entropy(f, target) for f in logits))
    assert all(a is b for a, b in zip(joint(logits), logits))


def test_loss_n_sends_no_gradient_into_earlier_heads():
    torch.manual_seed(0)
    model = parse_args(TINY_MSDNET).model.build()
    network = BoostedNetwork(model, [0.5] * model.num_exits)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))
    outputs = network.training_outputs(x)
    last = model.num_exits - 1
    F.cross_entropy(outputs[last], y).backward()
    for n in range(last):
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.heads[n].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.heads[last].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())


def test_train_time_outputs_equal_eval_time_outputs_with_varying_reweights():
    logits = _logits(n_exits=5)
    network = on_logits(reweight_factors([0.2, 1.0], 5))
    train_outputs = network.training_outputs(logits)
    eval_outputs = network(logits)
    for a, b in zip(train_outputs, eval_outputs):
        assert torch.equal(a, b)
    assert torch.equal(eval_outputs[2], network.ensemble(logits)[2])
    assert network.factors[1] != network.factors[4]


def test_loss_equalisation_uses_running_average_weights():
    logits, target = _logits(n_exits=3), torch.tensor([0, 1, 2, 3, 4])
    objective = ExitObjective(3, loss_equal=True)
    first_total, first_losses = objective(logits, target)
    torch.testing.assert_close(objective.loss_ema, first_losses)
    torch.testing.assert_close(first_total, first_losses.mean() * 3)  # equal weights at start
    scaled = [f * 2 for f in logits]
    total, losses = objective(scaled, target)
    ema = 0.9 * first_losses + 0.1 * losses
    torch.testing.assert_close(objective.loss_ema, ema)
    torch.testing.assert_close(total, (losses * ema.mean() / ema).sum())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_boosted_network_follows_the_recurrence_with_varying_factors(mode):
    torch.manual_seed(0)
    job = parse_args(TINY_MSDNET + ["--ensemble_reweight", "0.2,0.9"])
    network = network_of(job, job.model.build())
    getattr(network, mode)()
    factors = network.factors
    assert len(set(factors)) == network.num_exits  # non-constant
    x = torch.randn(4, 3, 32, 32)
    expected = boosted_recurrence(network.backbone(x), factors)
    for outputs in (network(x), network.training_outputs(x), [output for output, _ in network.iter_exits(x)]):
        for got, want in zip(outputs, expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert len(network(x, max_exit=2)) == 2


def test_early_exit_and_evaluation_read_outputs_from_the_boosted_network(monkeypatch):
    """Both consumers go through BoostedNetwork.combine: changing it changes what they see."""
    from boostnet.evaluation.early_exit import early_exit_predict
    from boostnet.evaluation.loading import LoadedRun
    from boostnet.evaluation.results import SplitOutputs, split_outputs

    job = parse_args(TINY_MSDNET + ["--ensemble_reweight", "0.2,0.9"])
    network = network_of(job, job.model.build().eval())
    x = torch.randn(6, 3, 32, 32)
    calls = []
    combine = BoostedNetwork.combine

    def spy(self, n, logits, previous):
        calls.append(n)
        return combine(self, n, logits, previous)

    monkeypatch.setattr(BoostedNetwork, "combine", spy)
    early_exit_predict(network, x, [float("inf")] * (network.num_exits - 1) + [0.0])
    assert calls == list(range(network.num_exits))
    calls.clear()
    run = LoadedRun.__new__(LoadedRun)
    run.network = network
    monkeypatch.setattr(
        "boostnet.evaluation.results.cached_logits",
        lambda run, dataset, split: (torch.stack(network.backbone(x)), torch.zeros(6)),
    )
    outputs = split_outputs(run, None, "test")
    assert isinstance(outputs, SplitOutputs) and calls == list(range(network.num_exits))
    with torch.no_grad():
        expected = torch.softmax(torch.stack(boosted_recurrence(network.backbone(x), network.factors)), 2)
    torch.testing.assert_close(outputs.probs, expected)
