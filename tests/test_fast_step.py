"""The fast training step computes the eager step: torch.compile on the CPU, CUDA graphs on a GPU.

Tolerance: after 20 steps (with a 10x learning-rate drop after step 10) the fp32 parameters and
buffers of the fast run, flattened into one vector, differ from the eager run's by at most
1e-4 of its norm (measured on this CPU: 1.2e-6). The run is a tiny MSDNet-GE at batch 64 on a
learnable synthetic task with lr 0.002. At larger learning rates fp32 runs of this network
cannot be compared over 20 steps by any implementation: perturbing the initial weights by
1e-8 (relative) flips single ReLU units and the training dynamics amplify that to 1e-4..1e-2
within ten steps, eager against eager.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from args import parse_args
from boostnet.training.optim import parameter_groups
from boostnet.training.settings import TrainingJob
from boostnet.training.step import (
    StepOutput,
    build_eval_forward,
    build_train_step,
    keep_learning_rates,
    make_sgd,
    resolve_step_mode,
    restore_state,
    snapshot,
    training_state_of,
)
from tests.run_fixtures import losses_of, network_of
from utils.errors import UserError

TINY = [
    "--dataset",
    "digits",
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "2",
    "--base",
    "1",
    "--step",
    "1",
    "--nChannels",
    "4",
    "--growthRate",
    "2",
    "--grFactor",
    "1-2-2",
    "--bnFactor",
    "1-2-2",
]
STEPS = 20
LR_DROP_AFTER = 10
BATCH = 64
DISTINCT_BATCHES = 4
LR = 0.002
RELATIVE_TOLERANCE = 1e-4
PARTIAL_BATCH = 40

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def learnable_batches(device: torch.device, partial_last: bool = False) -> list[tuple[Tensor, Tensor]]:
    """Random images labelled by a fixed random linear map: a task the network fits smoothly.

    With `partial_last` the last batch is cut short, like an epoch's last partial batch.
    """
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(DISTINCT_BATCHES * BATCH, 3, 32, 32, generator=generator)
    labels = (images.flatten(1) @ torch.randn(3 * 32 * 32, 10, generator=generator)).argmax(1)
    batches = [
        (images[i : i + BATCH].to(device), labels[i : i + BATCH].to(device))
        for i in range(0, len(images), BATCH)
    ]
    if partial_last:
        batches[-1] = (batches[-1][0][:PARTIAL_BATCH], batches[-1][1][:PARTIAL_BATCH])
    return batches


def groups_of(job: TrainingJob, model: nn.Module) -> list[dict]:
    """The job's weight-decay parameter groups of `model` (per exit where the backbone allows)."""
    return parameter_groups(model, job.train.weight_decay, job.model.backbone.per_exit_weight_decay)


def train(
    mode: str, device: torch.device, lr_drop: bool = True, partial_last: bool = False
) -> tuple[nn.Module, list[StepOutput]]:
    """STEPS steps of `mode` from the same initial weights; steps after the drop may not recompile."""
    job = parse_args(TINY)
    torch.manual_seed(0)
    model = job.model.build().to(device)
    objective = losses_of(job).to(device)
    optimizer = make_sgd(groups_of(job, model), LR, 0.9, device)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1], gamma=0.1)
    step = build_train_step(network_of(job, model), objective, optimizer, mode)
    batches = learnable_batches(device, partial_last)
    outputs = [step(*batches[i % len(batches)]) for i in range(LR_DROP_AFTER)]
    if lr_drop:
        scheduler.step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        outputs += [step(*batches[i % len(batches)]) for i in range(LR_DROP_AFTER, STEPS)]
    return model, outputs


def relative_error(model: nn.Module, reference: nn.Module) -> float:
    """|state - reference state| / |reference state| over all floating-point parameters and buffers."""
    pairs = [
        (a.double(), b.double())
        for a, b in zip(model.state_dict().values(), reference.state_dict().values())
        if a.is_floating_point()
    ]
    difference = sum(((a - b) ** 2).sum() for a, b in pairs).sqrt()
    return (difference / sum((b**2).sum() for _, b in pairs).sqrt()).item()


@pytest.fixture(scope="module")
def cpu_runs() -> dict[str, tuple[nn.Module, list]]:
    torch._dynamo.reset()
    cpu = torch.device("cpu")
    runs = {"eager": train("eager", cpu), "eager_no_drop": train("eager", cpu, lr_drop=False)}
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    runs["compile"] = train("compile", cpu)
    runs["compiled_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    return runs


def test_compiled_step_matches_eager_after_20_steps(cpu_runs):
    (eager, eager_outputs), (compiled, compiled_outputs) = cpu_runs["eager"], cpu_runs["compile"]
    assert relative_error(compiled, eager) <= RELATIVE_TOLERANCE
    torch.testing.assert_close(
        compiled_outputs[-1].per_exit_losses,
        eager_outputs[-1].per_exit_losses,
        rtol=RELATIVE_TOLERANCE,
        atol=0,
    )
    assert [o.per_exit_correct.tolist() for o in compiled_outputs] == [
        o.per_exit_correct.tolist() for o in eager_outputs
    ]


def test_learning_rate_drop_reaches_the_compiled_step_without_recompiling(cpu_runs):
    """The drop matters (measured: 60x the tolerance), the compiled run follows it, on one graph."""
    eager, no_drop = cpu_runs["eager"][0], cpu_runs["eager_no_drop"][0]
    assert relative_error(no_drop, eager) > 10 * RELATIVE_TOLERANCE
    assert relative_error(cpu_runs["compile"][0], eager) <= RELATIVE_TOLERANCE
    assert cpu_runs["compiled_graphs"] == 1


def test_step_outputs_stay_on_the_device_and_count_per_exit(cpu_runs):
    output = cpu_runs["eager"][1][-1]
    assert output.loss.shape == () and not output.loss.requires_grad
    assert output.per_exit_losses.shape == (2,) and output.per_exit_correct.dtype == torch.int64
    assert output.loss.item() == pytest.approx(output.per_exit_losses.sum().item(), rel=1e-6)
    assert 0 <= output.per_exit_correct.min() and output.per_exit_correct.max() <= BATCH


def test_learning_rates_replaced_by_load_state_dict_are_pinned_again():
    model = nn.Linear(3, 2)
    optimizer = make_sgd([{"params": model.parameters()}], 0.1, 0.9, torch.device("cpu"))
    pinned = optimizer.param_groups[0]["lr"]
    assert isinstance(pinned, Tensor) and optimizer.param_groups[0]["fused"]
    state = optimizer.state_dict()
    state["param_groups"][0]["lr"] = torch.tensor(0.025)
    optimizer.load_state_dict(state)
    assert optimizer.param_groups[0]["lr"] is not pinned
    keep_learning_rates(optimizer, [pinned])
    assert optimizer.param_groups[0]["lr"] is pinned and pinned.item() == pytest.approx(0.025)


def test_undoing_the_warm_up_makes_the_next_step_a_first_step():
    """What a captured step relies on: warm-up steps undone, the momentum they created zeroed."""
    cpu = torch.device("cpu")
    job = parse_args(TINY)
    steps, models = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = job.model.build()
        objective = losses_of(job)
        optimizer = make_sgd(groups_of(job, model), LR, 0.9, cpu)
        steps.append(
            (
                build_train_step(network_of(job, model), objective, optimizer, "eager"),
                training_state_of(model, objective, optimizer),
            )
        )
        models.append(model)
    (warmed, state), (fresh, _) = steps
    first, second = learnable_batches(cpu)[:2]
    saved = snapshot(state())
    for _ in range(3):
        warmed(*first)
    restore_state(saved, state())
    warmed(*second)
    fresh(*second)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)


def test_the_saved_training_state_holds_no_autograd_graph():
    """A capture after warm-up fails on a GPU if the snapshot keeps a gradient accumulator alive."""
    weight = nn.Linear(2, 2).weight
    assert [copy.grad_fn for _, copy in snapshot([weight])] == [None]
    assert not any(copy.requires_grad for _, copy in snapshot([weight]))


def test_cuda_graph_step_on_the_cpu_is_a_clear_error():
    job = parse_args(TINY)
    model = job.model.build()
    optimizer = make_sgd(groups_of(job, model), LR, 0.9, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="CUDA device"):
        build_train_step(network_of(job, model), losses_of(job), optimizer, "cuda_graph")
    with pytest.raises(UserError, match="--cuda-graph needs a CUDA device"):
        resolve_step_mode(parse_args(TINY + ["--cuda-graph"]).speed, torch.device("cpu"))


@pytest.mark.parametrize(
    "flags, device, world_size, mode",
    [
        ([], "cpu", 1, "eager"),
        (["--compile"], "cpu", 1, "compile"),
        (["--compile"], "cuda", 1, "compiled_cuda_graph"),
        (["--compile"], "cuda", 2, "compile"),
        (["--cuda-graph"], "cuda", 1, "cuda_graph"),
        (["--amp", "fp16"], "cuda", 1, "eager"),
    ],
)
def test_one_switch_picks_the_step_for_the_device(flags, device, world_size, mode):
    job = parse_args(TINY + flags)
    assert resolve_step_mode(job.speed, torch.device(device), world_size) == mode


@pytest.mark.parametrize("flags", [["--cuda-graph"], ["--compile", "--amp", "fp16"]])
def test_impossible_fast_steps_are_one_line_errors(flags):
    with pytest.raises(UserError):
        resolve_step_mode(parse_args(TINY + flags).speed, torch.device("cuda"), world_size=2)


@needs_cuda
@pytest.mark.parametrize("mode", ["cuda_graph", "compiled_cuda_graph"])
def test_captured_step_matches_eager_on_the_gpu(mode):
    """Including a partial batch every fourth step, which the captured step runs eagerly."""
    cuda = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = False
    try:
        eager, eager_outputs = train("eager", cuda, partial_last=True)
        fast, fast_outputs = train(mode, cuda, partial_last=True)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert relative_error(fast, eager) <= RELATIVE_TOLERANCE
    assert [o.per_exit_correct.tolist() for o in fast_outputs] == [
        o.per_exit_correct.tolist() for o in eager_outputs
    ]


@needs_cuda
def test_captured_eval_forward_matches_eager_on_the_gpu():
    cuda = torch.device("cuda")
    model = train("eager", cuda)[0].eval()
    forward = build_eval_forward(model, "cuda_graph")
    images = learnable_batches(cuda)[0][0]
    with torch.no_grad():
        for batch in (images, images.flip(0), images[:PARTIAL_BATCH]):
            for fast, eager in zip(forward(batch), model(batch)):
                torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-5)
