"""Real early exit gives the simulated protocol's predictions and exits, and skips the work it saves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import boostnet.evaluation.early_exit
import utils.cuda_graphs
from adaptive_inference import apply_thresholds, exit_fractions, find_thresholds
from boostnet.data.loaders import build_splits
from boostnet.evaluation.early_exit import (
    GraphedExitStages,
    early_exit_predict,
    exit_stage,
    expected_cost,
    inference_model,
    paired_groups,
    paired_throughput,
)
from models.boosting import BoostedNetwork
from models.multi_exit import MultiExitNetwork
from tests.graph_stand_in import fake_capture
from tests.run_fixtures import network_of, tiny_job, trained_model

LEVELS = (3, 10, 20, 30, 39)
TEST_IMAGES = 200


@dataclass
class Case:
    """A briefly trained tiny model in float64 (batch-size rounding cannot move a confidence across
    a threshold) read as a boosted or joint network, test images and their probabilities."""

    network: BoostedNetwork
    images: Tensor
    targets: Tensor
    probs: Tensor

    @property
    def model(self) -> MultiExitNetwork:
        return self.network.network


@pytest.fixture(scope="module")
def boosted_model():
    job = tiny_job()
    splits = build_splits(job.data, job.train.use_valid, job.train.seed, None)
    model, _ = trained_model(job, splits.train)
    images, targets = next(iter(DataLoader(splits.test, batch_size=TEST_IMAGES)))
    return model.double(), images.double(), targets


@pytest.fixture(scope="module", params=["boost", "joint"])
def case(boosted_model, request) -> Case:
    """The same weights read as a boosted ensemble (F_n) or as independent exits (f_n)."""
    model, images, targets = boosted_model
    network = network_of(tiny_job("--loss", request.param), model)
    with torch.no_grad():
        probs = network.probabilities(model(images))
    return Case(network, images, targets, probs)


def simulated_exits(probs: Tensor, thresholds: list[float]) -> Tensor:
    """Early exit (docs/evaluation.md) per sample, as a plain loop: the first exit whose confidence
    reaches its threshold."""
    confidence = probs.max(dim=2).values
    last = probs.shape[0] - 1
    return torch.tensor(
        [
            next((n for n in range(last) if confidence[n, i] >= thresholds[n]), last)
            for i in range(probs.shape[1])
        ]
    )


def separated(thresholds: Tensor, probs: Tensor) -> list[float]:
    """Each finite threshold moved halfway to the next lower confidence: the same exits, no exact ties."""
    confidence = probs.max(dim=2).values
    moved = []
    for n, threshold in enumerate(thresholds.tolist()):
        below = confidence[n][confidence[n] < threshold]
        moved.append(
            (threshold + below.max().item()) / 2 if math.isfinite(threshold) and len(below) else threshold
        )
    return moved


def protocol_thresholds(probs: Tensor, level: int) -> list[float]:
    return separated(find_thresholds(probs, exit_fractions(probs.shape[0], level)), probs)


@pytest.mark.parametrize("level", LEVELS)
def test_real_exit_equals_simulated_protocol(case, level):
    model, probs, targets = case.model, case.probs, case.targets
    thresholds = protocol_thresholds(probs, level)
    unmoved = find_thresholds(probs, exit_fractions(model.num_exits, level)).tolist()
    expected_exits = simulated_exits(probs, thresholds)
    assert torch.equal(expected_exits, simulated_exits(probs, unmoved))

    real = early_exit_predict(case.network, case.images, thresholds)

    assert torch.equal(real.exit_index, expected_exits)
    assert torch.equal(real.predictions, probs.argmax(dim=2)[expected_exits, torch.arange(len(targets))])
    accuracy, _, counts = apply_thresholds(probs, targets, thresholds, range(1, model.num_exits + 1))
    assert counts.tolist() == torch.bincount(real.exit_index, minlength=model.num_exits).tolist()
    assert accuracy == (real.predictions == targets).sum().item() * 100.0 / len(targets)


def test_levels_use_several_exits(case):
    """Guard for the test above: the levels spread the batch over the exits, differently per level."""
    counts = {
        tuple(
            torch.bincount(
                simulated_exits(case.probs, protocol_thresholds(case.probs, level)),
                minlength=case.model.num_exits,
            ).tolist()
        )
        for level in LEVELS
    }
    assert len(counts) == len(LEVELS)
    assert all(sum(1 for c in level_counts if c) > 1 for level_counts in counts)


def recorded_stages(model, monkeypatch) -> list[tuple[int, int]]:
    """(stage, batch size) of every `advance` call the model makes from now on."""
    calls = []
    advance = model.advance

    def recording_advance(n, features):
        calls.append((n, features[0].shape[0]))
        return advance(n, features)

    monkeypatch.setattr(model, "advance", recording_advance)
    return calls


def test_later_stages_only_see_the_remaining_samples(case, monkeypatch):
    thresholds = protocol_thresholds(case.probs, 10)
    counts = torch.bincount(simulated_exits(case.probs, thresholds), minlength=case.model.num_exits)
    calls = recorded_stages(case.model, monkeypatch)

    early_exit_predict(case.network, case.images, thresholds)

    still_running = (len(case.images) - torch.cumsum(counts, 0) + counts).tolist()
    last_used = int(counts.nonzero().max())
    assert calls == list(enumerate(still_running[: last_used + 1]))


def test_everyone_leaves_at_the_first_exit_with_zero_thresholds(case, monkeypatch):
    calls = recorded_stages(case.model, monkeypatch)

    result = early_exit_predict(case.network, case.images, [0.0] * case.model.num_exits)

    assert calls == [(0, len(case.images))]
    assert result.exit_index.eq(0).all()
    assert torch.equal(result.predictions, case.probs[0].argmax(dim=1))


def test_infinite_thresholds_run_everyone_to_the_last_exit(case):
    thresholds = [math.inf] * (case.model.num_exits - 1) + [-math.inf]

    result = early_exit_predict(case.network, case.images, thresholds)

    assert result.exit_index.eq(case.model.num_exits - 1).all()
    assert torch.equal(result.predictions, case.probs[-1].argmax(dim=1))


def test_threshold_count_must_match_the_exits(case):
    with pytest.raises(ValueError, match="thresholds"):
        early_exit_predict(case.network, case.images, [0.5])


@pytest.mark.parametrize("batch", [1, 7])
def test_graphed_stages_reuse_static_buffers_correctly(case, batch, monkeypatch):
    """The bookkeeping of GraphedExitStages (static inputs, chained outputs, eager fallback for
    other sizes) with a CPU stand-in for capture; the GPU test checks real graphs."""
    monkeypatch.setattr(utils.cuda_graphs, "capture", fake_capture)
    thresholds = protocol_thresholds(case.probs, 10)
    chunks = case.images[:28].split(batch)
    eager = [early_exit_predict(case.network, c, thresholds) for c in chunks]
    stages = GraphedExitStages(exit_stage(case.network), batch, torch.device("cuda"))

    for _ in range(2):
        graphed = [early_exit_predict(case.network, c, thresholds, stages) for c in chunks]
        assert torch.equal(
            torch.cat([g.exit_index for g in graphed]), torch.cat([e.exit_index for e in eager])
        )
        assert torch.equal(
            torch.cat([g.predictions for g in graphed]), torch.cat([e.predictions for e in eager])
        )
    assert 0 in stages.graphs and (batch > 1 or len(stages.graphs) > 1)


def test_graphed_stages_refuse_inputs_of_another_shape(case, monkeypatch):
    monkeypatch.setattr(utils.cuda_graphs, "capture", fake_capture)
    stages = GraphedExitStages(exit_stage(case.network), 1, torch.device("cuda"))
    with torch.inference_mode():
        stages(0, case.images[:1], None)
        with pytest.raises(ValueError, match="captured for inputs of shapes"):
            stages(0, case.images[:1, :, :16, :16], None)


def test_graphed_stages_refuse_the_cpu(case):
    with pytest.raises(RuntimeError, match="CUDA"):
        GraphedExitStages(exit_stage(case.network), 1, torch.device("cpu"))


def test_inference_model_folds_batchnorm_and_keeps_the_outputs(boosted_model):
    model, images, _ = boosted_model
    fast = inference_model(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        for folded, original in zip(
            fast(images[:16].contiguous(memory_format=torch.channels_last)), model(images[:16])
        ):
            torch.testing.assert_close(folded, original, rtol=1e-9, atol=1e-9)


def test_expected_cost_weights_exit_costs_by_exit_shares():
    assert expected_cost(torch.tensor([2, 0, 2]), [10.0, 20.0, 40.0]) == 25.0


def test_paired_throughput_times_every_batch_of_both_paths():
    calls = {"full": 0, "early": 0}
    batches = [torch.zeros(4, 1), torch.zeros(2, 1)]

    def step(name):
        return lambda images: calls.__setitem__(name, calls[name] + 1)

    speed = paired_throughput(step("full"), step("early"), batches, torch.device("cpu"), repeats=3)

    assert calls == {"full": 1 + 3 * len(batches), "early": 1 + 3 * len(batches)}
    assert speed.full_network > 0 and speed.early_exit > 0 and speed.speedup > 0


def scripted_clock(durations: list[float]) -> SimpleNamespace:
    """A stand-in for the `time` module whose perf_counter makes the k-th timed pass last durations[k]."""
    readings, now = [], 0.0
    for duration in durations:
        readings += [now, now + duration]
        now += duration
    return SimpleNamespace(perf_counter=iter(readings).__next__)


def test_paired_throughput_reports_rates_whose_ratio_is_its_speedup(monkeypatch):
    """Passes alternate (full, early), (early, full), ...; 6 images a pass. Full network rates
    8, 8, 4, 16 images/s (median 8), early exit 16, 24, 16, 8 (median 16): 2x, paired 0.5x-4x."""
    pass_durations = [0.75, 0.375, 0.25, 0.75, 1.5, 0.375, 0.75, 0.375]
    monkeypatch.setattr(boostnet.evaluation.early_exit, "time", scripted_clock(pass_durations))
    batches = [torch.zeros(4, 1), torch.zeros(2, 1)]

    speed = paired_throughput(
        lambda images: None, lambda images: None, batches, torch.device("cpu"), repeats=4
    )

    assert (speed.full_network, speed.early_exit) == (8.0, 16.0)
    assert speed.speedup == speed.early_exit / speed.full_network == 2.0
    assert speed.paired_speedup_range == (0.5, 4.0)
    assert (speed.repeats, speed.images) == (4, 6)
    assert speed.as_json() == {
        "images_per_second": {"full_network": 8.0, "early_exit": 16.0},
        "speedup": 2.0,
        "paired_speedup_range": [0.5, 4.0],
        "timing_repeats": 4,
        "timed_images": 6,
    }
    assert "early exit 16.0 images/s vs full network 8.0 images/s, 2.00x" in speed.summary()
    assert "4 paired passes over 6 images" in speed.summary()


def test_paired_groups_hold_whole_batches_of_at_least_the_group_size():
    batches = [torch.zeros(size, 1) for size in (20, 20, 40, 10, 5)]

    groups = paired_groups(batches, group_images=32)

    assert [[len(batch) for batch in group] for group in groups] == [[20, 20], [40], [10, 5]]


def test_paired_throughput_interleaves_the_paths_group_by_group():
    """Batches of 32 images are groups of their own; within a repetition the path that goes first
    alternates from group to group, and from one repetition to the next."""
    calls = []
    batches = [torch.zeros(32, 1) for _ in range(3)]

    def step(name):
        return lambda images: calls.append(name)

    paired_throughput(step("full"), step("early"), batches, torch.device("cpu"), repeats=2)

    first_of_each_pair = calls[2::2]  # after the warm-up call of each path
    assert first_of_each_pair == ["full", "early", "full", "early", "full", "early"]


def test_paired_throughput_sums_each_paths_groups_into_its_pass(monkeypatch):
    """Two groups of 32 images a repetition: full network 0.5 s + 0.5 s, early exit 0.25 s +
    0.25 s, so 64 and 128 images/s, a 2x speed-up."""
    group_durations = [0.5, 0.25, 0.25, 0.5]  # (full, early) then (early, full)
    monkeypatch.setattr(boostnet.evaluation.early_exit, "time", scripted_clock(group_durations))

    speed = paired_throughput(
        lambda images: None, lambda images: None, [torch.zeros(32, 1)] * 2, torch.device("cpu"), 1
    )

    assert (speed.full_network, speed.early_exit, speed.speedup) == (64.0, 128.0, 2.0)


def test_paired_throughput_needs_a_repetition():
    with pytest.raises(ValueError, match="repetition"):
        paired_throughput(
            lambda images: None, lambda images: None, [torch.zeros(1, 1)], torch.device("cpu"), repeats=0
        )
