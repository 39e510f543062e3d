"""ShapeGraphs' bookkeeping (which graph a call replays, its buffers, its outputs) and the captured
training step, on the CPU with a stand-in for capture; the GPU tests check real graphs."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor

import utils.cuda_graphs
from args import parse_args
from boostnet.training.optim import parameter_groups
from boostnet.training.step import (
    CapturedStep,
    EagerStep,
    build_train_step,
    make_forward,
    make_sgd,
    memory_format_for,
    tensor_learning_rates,
    training_state_of,
)
from tests.conftest import TINY_MSDNET
from tests.graph_stand_in import fake_capture
from tests.run_fixtures import losses_of, network_of
from utils.cuda_graphs import ShapeGraphs, require_cuda


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(utils.cuda_graphs, "capture", fake_capture)


class Recorder:
    """`x -> 2x` that counts its calls; `eager` marks what the eager path returns."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x: Tensor) -> list[Tensor]:
        self.calls += 1
        return [x * 2]

    @staticmethod
    def eager(x: Tensor) -> str:
        return "eager"


def test_first_signature_is_captured_others_run_eagerly_and_replays_return_copies(stand_in):
    fn = Recorder()
    graphs = ShapeGraphs(fn, Recorder.eager, max_graphs=1)
    first = graphs(torch.ones(3))
    second = graphs(torch.full((3,), 5.0))

    assert graphs(torch.ones(4)) == "eager"
    assert list(graphs.graphs) == [((3,),)]
    assert torch.equal(first[0], torch.full((3,), 2.0)) and torch.equal(second[0], torch.full((3,), 10.0))
    static = graphs.graphs[((3,),)].outputs[0]
    assert first[0] is not static and second[0] is not static and fn.calls == 3


def test_static_outputs_chain_into_the_next_graph_without_copies(stand_in):
    graphs = ShapeGraphs(lambda n, x: [x * 2], Recorder.eager, key=lambda n, x: n, copy_outputs=False)
    x = torch.ones(2)
    out0 = graphs(0, x)
    out1 = graphs(1, out0[0])

    assert out0 is graphs.graphs[0].outputs and out1 is graphs.graphs[1].outputs
    assert graphs.graphs[1].inputs[0] is out0[0] and graphs.graphs[0].inputs[0] is not x
    graphs(0, torch.full((2,), 3.0))
    assert torch.equal(graphs(1, out0[0])[0], torch.full((2,), 12.0))


def test_a_key_replayed_with_other_shapes_is_an_error(stand_in):
    graphs = ShapeGraphs(Recorder(), Recorder.eager, key=lambda x: "one")
    graphs(torch.ones(2))
    with pytest.raises(ValueError, match="captured for inputs of shapes"):
        graphs(torch.ones(3))


def test_around_capture_encloses_the_capture_only(stand_in):
    events = []

    @contextlib.contextmanager
    def around():
        events.append("enter")
        yield
        events.append("exit")

    graphs = ShapeGraphs(lambda x: events.append("run") or [x], Recorder.eager, around_capture=around)
    graphs(torch.ones(1))
    assert events == ["enter", "run", "exit", "run"]


def test_graphs_refuse_the_cpu_naming_the_alternative():
    with pytest.raises(ValueError, match=r"^--x needs a CUDA device, this run uses cpu; use y$"):
        require_cuda(torch.device("cpu"), "--x", "use y", ValueError)
    require_cuda(torch.device("cuda"), "--x", "use y")


def tiny_training(step_kind: str):
    """A tiny MSDNet-GE, its objective and fused SGD; the step is eager or captured (stand-in)."""
    torch.manual_seed(0)
    job = parse_args(TINY_MSDNET + ["--dataset", "digits"])
    model = job.model.build()
    objective = losses_of(job)
    groups = parameter_groups(model, job.train.weight_decay, job.model.backbone.per_exit_weight_decay)
    optimizer = make_sgd(groups, 0.01, 0.9, torch.device("cpu"))
    network = network_of(job, model)
    if step_kind == "eager":
        return model, build_train_step(network, objective, optimizer, "eager")
    rates = tensor_learning_rates(optimizer, torch.device("cpu"))
    forward = make_forward(network, objective, None, memory_format_for(False))
    step = CapturedStep(
        EagerStep(forward, optimizer, rates),
        EagerStep(forward, optimizer, rates, set_to_none=False),
        training_state_of(model, objective, optimizer),
    )
    return model, step


def test_captured_step_undoes_its_warm_up_and_trains_like_the_eager_step(stand_in):
    """Capture's own training step is undone; full batches replay, the partial one runs eagerly."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 8, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (3, 8), generator=generator)
    batches = [(images[0], labels[0]), (images[1], labels[1]), (images[2, :5], labels[2, :5])] * 2
    (eager_model, eager), (captured_model, captured) = tiny_training("eager"), tiny_training("captured")

    for batch in batches:
        expected, got = eager(*batch), captured(*batch)
        assert torch.equal(got.per_exit_losses, expected.per_exit_losses)
        assert torch.equal(got.per_exit_correct, expected.per_exit_correct)
    assert list(captured.graphs.graphs) == [((8, 3, 32, 32), (8,))]
    for a, b in zip(captured_model.state_dict().values(), eager_model.state_dict().values()):
        assert torch.equal(a, b)
