"""Fast training steps and evaluation forwards: eager, torch.compile, or one CUDA graph.

A training step is forward through every exit, the objective, backward and the optimiser
update; :func:`build_train_step` returns it as ``step(images, targets) -> StepOutput`` with
all outputs on the device and no host synchronisation inside (except GradScaler's overflow
check with ``--amp fp16``, which only the eager mode supports). Modes:

- ``eager``: plain PyTorch.
- ``compile``: the forward and objective go through ``torch.compile`` (inductor's default mode
  unless ``compile_mode`` says otherwise; ``compile_backend="aot_eager"`` traces the same
  graphs without inductor's code generation, a cheap check of the plumbing, not a speedup);
  backward runs the compiled backward graph and the optimiser step stays eager. On CUDA,
  ``"max-autotune-no-cudagraphs"`` can add autotuned kernels at minutes of extra compile time;
  ``"reduce-overhead"`` captures the forward and backward graphs separately with CUDA-graph
  trees, whose outputs the next step overwrites (StepOutput clones them) --
  ``compiled_cuda_graph`` below is the better CUDA choice.
- ``cuda_graph``: the whole eager step (forward, objective, backward, fused SGD) captured as
  one CUDA graph after a warm-up on a side stream and replayed per batch; the batch is
  copied into static input buffers. GPU only, single process.
- ``compiled_cuda_graph``: the same capture with the compiled forward inside (fewer, fused
  kernels; one launch). What ``--compile`` selects on a single GPU.

Learning rates are 0-dim tensors on the device, one per parameter group, changed in place by
the LR scheduler (torch >= 2.7 fills tensor learning rates in place), so a new rate reaches
the captured graph and never recompiles anything; each step re-installs them if something
(an older scheduler, ``optimizer.load_state_dict``) replaced them. The optimiser must be SGD
with a fused kernel for the graph modes (:func:`make_sgd` builds one): foreach SGD turns a
tensor learning rate into a Python number, a host synchronisation capture forbids.

Numerics: fp32 by default, as in the paper; ``--amp`` is refused where its autocast does not exist
(:func:`require_autocast`), and bf16 runs on the CPU too. TF32 is allowed and left to PyTorch's settings:
cuDNN convolutions use TF32 unless ``torch.backends.cudnn.allow_tf32 = False``; matmuls use it
only after ``torch.backends.cuda.matmul.allow_tf32 = True``. ``amp="bf16"`` runs the forward
under bf16 autocast (any mode); ``amp="fp16"`` needs a dynamic loss scale and is eager only.
BatchNorm running statistics and the objective's loss EMA are updated by the captured graph
in place, like every other buffer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils._pytree import register_dataclass

from boostnet.training.settings import SpeedSettings
from models.boosting import BoostedNetwork, ExitObjective
from utils.cuda_graphs import ShapeGraphs, require_cuda
from utils.errors import UserError
from utils.metrics import correct_counts

STEP_MODES = ("eager", "compile", "cuda_graph", "compiled_cuda_graph")
GRAPH_MODES = ("cuda_graph", "compiled_cuda_graph")
COMPILED_MODES = ("compile", "compiled_cuda_graph")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FUSED_SGD_DEVICES = ("cuda", "cpu")

ForwardFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


@dataclass
class StepOutput:
    """Detached device tensors of one step: total loss, per-exit losses, per-exit correct counts."""

    loss: Tensor
    per_exit_losses: Tensor
    per_exit_correct: Tensor


register_dataclass(StepOutput)  # a pytree, so a captured step's outputs are copied field by field

TrainStep = Callable[[Tensor, Tensor], StepOutput]
EvalForward = Callable[[Tensor], list[Tensor]]


def resolve_step_mode(
    speed: SpeedSettings, device: torch.device, world_size: int = 1, optimizer: str = "sgd"
) -> str:
    """The step mode `--compile` / `--cuda-graph` ask for on this device (one switch per device).

    `--compile` means the compiled step captured as one CUDA graph on a single GPU, and plain
    torch.compile on the CPU or under torchrun (a captured step cannot hold DDP's all-reduces).
    A captured step holds fused SGD only: `--opt adamw` with one is refused.
    """
    require_autocast(speed.amp, device)
    mode = step_mode(speed, device, world_size)
    if mode in GRAPH_MODES and optimizer != "sgd":
        flag = "--cuda-graph" if speed.cuda_graph else "--compile (on one GPU)"
        raise UserError(
            f"--opt {optimizer} is not captured in a CUDA graph, which {flag} makes; "
            "use --opt sgd, or drop the flag"
        )
    return mode


def require_autocast(amp: Optional[str], device: torch.device) -> None:
    """Refuse `--amp` where its autocast does not exist: a device type PyTorch has no autocast for,
    or bf16 on a GPU without bfloat16 arithmetic (before Ampere). The CPU has both precisions."""
    if amp is None:
        return
    if not torch.amp.is_autocast_available(device.type):
        raise UserError(f"--amp {amp}: PyTorch has no autocast on {device.type}; drop --amp")
    if (
        amp == "bf16"
        and device.type == "cuda"
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise UserError(
            f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 arithmetic; "
            "use --amp fp16 or drop --amp"
        )


def step_mode(speed: SpeedSettings, device: torch.device, world_size: int) -> str:
    """The step mode the speed flags select on this device (:func:`resolve_step_mode`)."""
    fast_flag = "--cuda-graph" if speed.cuda_graph else "--compile" if speed.compile else None
    require_eager_for_fp16(speed.amp, fast_flag, UserError)
    if speed.cuda_graph:
        require_cuda(device, "--cuda-graph", "use --compile on the CPU", UserError)
        if world_size > 1:
            raise UserError("--cuda-graph captures a single-process step; under torchrun use --compile")
        return "cuda_graph"
    if speed.compile:
        return "compiled_cuda_graph" if device.type == "cuda" and world_size == 1 else "compile"
    return "eager"


def require_eager_for_fp16(
    amp: Optional[str], fast: Optional[str], error: type[Exception] = ValueError
) -> None:
    """fp16 needs GradScaler's overflow check on the host each step, which only the eager step
    makes: refuse it with `fast` (the fast step asked for; None for the eager step)."""
    if amp == "fp16" and fast is not None:
        raise error(
            f"--amp fp16 needs a dynamic loss scale, which only the eager step applies, "
            f"not {fast}; use --amp bf16 with it"
        )


def make_adamw(param_groups: Iterable[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (torch's betas (0.9, 0.999) and eps 1e-8; each group's decoupled weight decay) with a
    tensor learning rate per group, fused on CPU/CUDA: the foreach kernel refuses a tensor lr.
    Eager and compiled steps only (:func:`resolve_step_mode` keeps it out of CUDA graphs)."""
    groups = [
        {**group, "lr": torch.tensor(float(group.get("lr", lr)), device=device)} for group in param_groups
    ]
    fused = device.type in FUSED_SGD_DEVICES
    return torch.optim.AdamW(groups, lr=lr, fused=fused, foreach=False)


def make_sgd(
    param_groups: Iterable[dict], lr: float, momentum: float, device: torch.device
) -> torch.optim.SGD:
    """SGD (no Nesterov, no dampening) with a tensor learning rate per group, fused on CPU/CUDA."""
    groups = [
        {**group, "lr": torch.tensor(float(group.get("lr", lr)), device=device)} for group in param_groups
    ]
    fused = device.type in FUSED_SGD_DEVICES
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=False, fused=fused, foreach=not fused)


def tensor_learning_rates(optimizer: torch.optim.Optimizer, device: torch.device) -> list[Tensor]:
    """Make every group's learning rate a 0-dim fp32 tensor on `device` (in place) and return them."""
    rates = []
    for group in optimizer.param_groups:
        rate = group["lr"]
        if not (
            isinstance(rate, Tensor)
            and rate.device == device
            and rate.dtype == torch.float32
            and rate.dim() == 0
        ):
            rate = torch.tensor(float(rate), dtype=torch.float32, device=device)
            group["lr"] = rate
        rates.append(rate)
    return rates


def keep_learning_rates(optimizer: torch.optim.Optimizer, rates: Sequence[Tensor]) -> None:
    """Re-install `rates` where a group's lr was replaced, carrying the new value over (no sync)."""
    for group, rate in zip(optimizer.param_groups, rates):
        current = group["lr"]
        if current is not rate:
            if isinstance(current, Tensor):
                rate.copy_(current.reshape(()))
            else:
                rate.fill_(current)
            group["lr"] = rate


def autocast_context(device: torch.device, amp: Optional[str]) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast, or nothing (fp32); the weight-cast cache is off so graphs can capture it."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp], cache_enabled=False)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live."""
    return next(model.parameters()).device


def memory_format_for(channels_last: bool) -> torch.memory_format:
    """channels_last or the default layout."""
    return torch.channels_last if channels_last else torch.contiguous_format


def make_forward(
    network: BoostedNetwork, objective: ExitObjective, amp: Optional[str], memory_format: torch.memory_format
) -> ForwardFn:
    """images, targets -> (loss, per-exit losses, per-exit correct counts), all on the device."""
    device = model_device(network)

    def forward(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        images = images.contiguous(memory_format=memory_format)
        with autocast_context(device, amp):
            outputs = network.training_outputs(images)
            loss, per_exit_losses = objective(outputs, targets)
        return loss, per_exit_losses, correct_counts(outputs, targets)

    return forward


def compiled(fn: Callable, compile_mode: Optional[str], backend: str) -> Callable:
    """`fn` through torch.compile with static shapes (the batch shape is fixed per step mode)."""
    if backend != "inductor" and compile_mode is not None:
        raise ValueError(f"compile_mode {compile_mode!r} is an inductor option; backend is {backend!r}")
    return torch.compile(fn, mode=compile_mode, backend=backend, dynamic=False)


def check_graph_ready(network: BoostedNetwork, optimizer: torch.optim.Optimizer) -> None:
    """Refuse what a captured step cannot do, with the reason."""
    require_cuda(model_device(network), "a CUDA-graph step", "use mode 'compile' or 'eager' on the CPU")
    if isinstance(network.backbone, nn.parallel.DistributedDataParallel):
        raise ValueError("a CUDA-graph step cannot capture DistributedDataParallel; use 'compile'")
    if not isinstance(optimizer, torch.optim.SGD) or any(
        not group["fused"] or group["dampening"] != 0 for group in optimizer.param_groups
    ):
        raise ValueError(
            "a CUDA-graph step needs fused SGD without dampening (boostnet.training.step.make_sgd)"
        )


def build_train_step(
    network: BoostedNetwork,
    objective: ExitObjective,
    optimizer: torch.optim.Optimizer,
    mode: str,
    amp: Optional[str] = None,
    channels_last: bool = False,
    *,
    compile_mode: Optional[str] = None,
    compile_backend: str = "inductor",
    scaler: Optional[torch.amp.GradScaler] = None,
) -> TrainStep:
    """The training step for `mode` (see the module docstring); build it after loading a checkpoint.

    The network's backbone may be wrapped in DistributedDataParallel (eager and compile modes).
    With `channels_last` the model is converted in place and inputs are converted per step. A graph
    mode captures at its first call: its first batch fixes the batch shape, and a batch of
    another shape (a last partial batch) runs the eager step instead.
    """
    if mode not in STEP_MODES:
        raise ValueError(f"unknown step mode {mode!r}; choose one of {', '.join(STEP_MODES)}")
    if mode in GRAPH_MODES:
        check_graph_ready(network, optimizer)
    require_eager_for_fp16(amp, None if mode == "eager" else f"mode {mode!r}")
    memory_format = memory_format_for(channels_last)
    if channels_last:
        network.to(memory_format=memory_format)
    rates = tensor_learning_rates(optimizer, model_device(network))
    forward = make_forward(network, objective, amp, memory_format)
    if amp == "fp16":
        return ScaledStep(
            forward, optimizer, rates, scaler or torch.amp.GradScaler(model_device(network).type)
        )
    fast_forward = compiled(forward, compile_mode, compile_backend) if mode in COMPILED_MODES else forward
    step = EagerStep(fast_forward, optimizer, rates)
    if mode in GRAPH_MODES:
        fallback = EagerStep(forward, optimizer, rates, set_to_none=False)
        return CapturedStep(step, fallback, training_state_of(network, objective, optimizer))
    return step


class EagerStep:
    """zero_grad, forward (possibly compiled), backward, optimiser step."""

    def __init__(
        self,
        forward: ForwardFn,
        optimizer: torch.optim.Optimizer,
        rates: Sequence[Tensor],
        set_to_none: bool = True,
    ):
        self.forward, self.optimizer, self.rates = forward, optimizer, rates
        self.set_to_none = set_to_none

    def __call__(self, images: Tensor, targets: Tensor) -> StepOutput:
        keep_learning_rates(self.optimizer, self.rates)
        return self.run(images, targets)

    def run(self, images: Tensor, targets: Tensor) -> StepOutput:
        """The step itself, without the host-side learning-rate check (what a graph captures)."""
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        loss, per_exit_losses, correct = self.forward(images, targets)
        loss.backward()
        self.optimizer.step()
        return StepOutput(loss.detach(), per_exit_losses, correct)


class ScaledStep(EagerStep):
    """The eager step with fp16 loss scaling (GradScaler checks for overflow on the host)."""

    def __init__(
        self,
        forward: ForwardFn,
        optimizer: torch.optim.Optimizer,
        rates: Sequence[Tensor],
        scaler: torch.amp.GradScaler,
    ):
        super().__init__(forward, optimizer, rates)
        self.scaler = scaler

    def run(self, images: Tensor, targets: Tensor) -> StepOutput:
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        loss, per_exit_losses, correct = self.forward(images, targets)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepOutput(loss.detach(), per_exit_losses, correct)


def training_state_of(
    model: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[], list[Tensor]]:
    """A function listing every tensor a training step changes: parameters, buffers, optimiser state."""

    def tensors() -> list[Tensor]:
        state = [*model.parameters(), *model.buffers(), *objective.buffers()]
        return state + [
            value
            for per_param in optimizer.state.values()
            for value in per_param.values()
            if isinstance(value, Tensor)
        ]

    return tensors


class CapturedStep:
    """A training step replayed from one CUDA graph; shapes other than the captured one run eagerly.

    Warm-up steps really train, so every parameter, buffer and optimiser state is restored
    afterwards; momentum buffers the warm-up created are zeroed, which makes the first replay
    exactly SGD's first step (buffer = gradient, since dampening is 0).
    """

    def __init__(self, step: EagerStep, fallback: EagerStep, state: Callable[[], list[Tensor]]):
        self.step = step
        self.graphs = ShapeGraphs(
            step.run,
            fallback,
            max_graphs=1,
            device=step.rates[0].device,
            around_capture=lambda: undone(state),
        )

    def __call__(self, images: Tensor, targets: Tensor) -> StepOutput:
        keep_learning_rates(self.step.optimizer, self.step.rates)
        return self.graphs(images, targets)


@contextlib.contextmanager
def undone(state: Callable[[], list[Tensor]]) -> Iterator[None]:
    """What runs inside leaves the training state as it found it (new state tensors zeroed)."""
    saved = snapshot(state())
    yield
    restore_state(saved, state())


def snapshot(tensors: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Each tensor with a detached copy of its value.

    Detached, because a clone of a parameter made with autograd on would hold the parameter's
    gradient accumulator alive, tied to the stream it was made on; a CUDA-graph capture on
    another stream whose backward meets it fails ("operation would make the legacy stream
    depend on a capturing blocking stream", seen on an H200 with torch 2.11).
    """
    return [(tensor, tensor.detach().clone()) for tensor in tensors]


@torch.no_grad()
def restore_state(saved: list[tuple[Tensor, Tensor]], current: list[Tensor]) -> None:
    """Copy saved values back in place; state tensors created since (momentum buffers) become zero."""
    known = {id(tensor) for tensor, _ in saved}
    for tensor, value in saved:
        tensor.copy_(value)
    for tensor in current:
        if id(tensor) not in known:
            tensor.zero_()


def build_eval_forward(
    model: nn.Module,
    mode: str,
    amp: Optional[str] = None,
    channels_last: bool = False,
    *,
    compile_mode: Optional[str] = None,
    compile_backend: str = "inductor",
) -> EvalForward:
    """images -> `model(images)` as a list (every exit's output), no autograd; in eval mode.

    Graph modes capture the eval-mode forward at the first call (its batch shape; other shapes
    run eagerly) and return fresh copies of the logits.
    """
    if mode not in STEP_MODES:
        raise ValueError(f"unknown step mode {mode!r}; choose one of {', '.join(STEP_MODES)}")
    if mode in GRAPH_MODES:
        require_cuda(model_device(model), "a CUDA-graph forward", "use mode 'compile' or 'eager'")
    memory_format = memory_format_for(channels_last)
    if channels_last:
        model.to(memory_format=memory_format)
    device = model_device(model)

    def forward(images: Tensor) -> list[Tensor]:
        with autocast_context(device, amp):
            return list(model(images.contiguous(memory_format=memory_format)))

    eager = torch.no_grad()(forward)
    fast = torch.no_grad()(
        compiled(forward, compile_mode, compile_backend) if mode in COMPILED_MODES else forward
    )
    if mode in GRAPH_MODES:
        return ShapeGraphs(fast, eager, max_graphs=1)
    return fast
