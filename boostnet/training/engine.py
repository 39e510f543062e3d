"""The one training engine behind train_cifar100.py and train_imagenet.py (docs/method.md, docs/recipes.md).

One process or a torchrun job (detected from the environment): SGD with per-exit
weight-decay groups, MultiStepLR, the boosted or joint objective. The step itself (eager,
torch.compile or a captured CUDA graph; autocast, channels-last) comes from
:mod:`boostnet.training.step`; the loop keeps metrics on the device and synchronises with it only
every `--log-interval` steps. Per epoch: validation (with --use-valid), config, log,
summary.csv, TensorBoard scalars and an atomic `model_latest.pth` (+ `model_best.pth`), so
`--resume` continues exactly where the last epoch ended. Inside the epoch, every
`--checkpoint-interval` and on SIGTERM, SIGUSR1 or Ctrl-C, an atomic `model_recovery.pth`
records the position in the epoch too (:mod:`boostnet.runs.recovery`); a stop then exits with
EXIT_PREEMPTED. The run directory is locked while training (:mod:`boostnet.runs.lock`).
"""
from __future__ import annotations

import argparse
import contextlib
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ReduceOp
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from models import MultiExitNetwork, build_model, param_groups_by_stage
from models.boosting import build_boosted, build_objective
from utils import distributed
from utils.checkpoint import (capture_rng_state, load_checkpoint, load_weights, restore_rng_state,
                              save_checkpoint)
from boostnet.data.loaders import build_splits, eval_loader, remaining_batches, start_epoch, train_loader
from boostnet.data.datasets import dataset_info
from utils.determinism import deterministic_algorithms
from utils.distributed import DistInfo
from utils.errors import UserError
from boostnet.training.step import (build_eval_forward, build_train_step, make_sgd, memory_format_for,
                             resolve_step_mode)
from boostnet.data.gpu_batches import GpuBatches, use_gpu_data
from utils.metrics import correct_counts
from boostnet.runs.recovery import PartialEpoch, RecoveryTrigger, newest_checkpoint, preempted
from boostnet.runs.records import (BEST_CHECKPOINT, LATEST_CHECKPOINT, RunLog, check_run_dir, duration_text,
                           locate_checkpoint, provenance, write_config, write_summary)
from boostnet.runs.layout import RECOVERY_CHECKPOINT, run_config
from boostnet.runs.lock import owned_run_dir

RESUME_MUST_MATCH = ("dataset", "arch", "nBlocks", "base", "step", "stepmode", "nChannels",
                     "growthRate", "grFactor", "bnFactor", "prune", "reduction", "bottleneck",
                     "block_step", "scale_list", "compress_factor", "loss", "ensemble_reweight",
                     "loss_equal", "use_valid")
NO_BAD_STEP = 2 ** 62


@dataclass
class ExitMetrics:
    """Per-exit mean loss and top-1 accuracy (%) over `count` samples."""

    loss: list[float]
    accuracy: list[float]
    count: int

    def scalars(self, prefix: str) -> dict[str, float]:
        """TensorBoard tags `prefix/loss_exit_n` and `prefix/acc_exit_n`, exits numbered from 1."""
        values = {}
        for n, (loss, accuracy) in enumerate(zip(self.loss, self.accuracy), 1):
            values[f"{prefix}/loss_exit_{n}"] = loss
            values[f"{prefix}/acc_exit_{n}"] = accuracy
        return values

    def summary(self) -> str:
        """One line for the console: the loss summed over exits and every exit's accuracy."""
        accuracies = "/".join(f"{a:.1f}" for a in self.accuracy)
        return f"loss (sum of {len(self.loss)} exits) {sum(self.loss):.3f} acc {accuracies}"


class MetricSums:
    """Per-exit loss and correct-count sums kept on the device, so adding never synchronises."""

    def __init__(self, exits: int, device: torch.device):
        self.loss = torch.zeros(exits, dtype=torch.float64, device=device)
        self.correct = torch.zeros(exits, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, exit_losses: Tensor, exit_correct: Tensor, batch_size: int) -> None:
        """Accumulate one batch (per-exit mean losses, per-exit correct counts)."""
        self.loss += exit_losses.double() * batch_size
        self.correct += exit_correct
        self.count += batch_size

    def state_dict(self) -> dict:
        """The sums so far on the CPU (a recovery checkpoint carries them)."""
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s sums."""
        self.loss.copy_(state["loss"])
        self.correct.copy_(state["correct"])
        self.count = state["count"]

    def metrics(self, across_ranks: bool) -> ExitMetrics:
        """Means over this rank's samples, or over all ranks' (exact: each sample counted once)."""
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.loss.device)
        totals = torch.cat([self.loss, self.correct, count])
        if across_ranks:
            distributed.all_reduce_(totals)
        exits = len(self.loss)
        count = max(totals[-1].item(), 1)
        return ExitMetrics(loss=(totals[:exits] / count).tolist(),
                           accuracy=(100 * totals[exits:2 * exits] / count).tolist(),
                           count=int(totals[-1].item()))


class IntervalSpeed:
    """Images per second (all ranks) since the previous reading."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.images = 0
        self.started = time.perf_counter()

    def images_per_second(self) -> float:
        """The rate since the last call (or creation); restarts the count."""
        now = time.perf_counter()
        rate = self.images * self.world_size / max(now - self.started, 1e-9)
        self.images, self.started = 0, now
        return rate


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def weight_decays(args: argparse.Namespace, exits: int) -> list[float]:
    """`--weight-decay a` for every exit, or `a,b` linearly spaced from first to last exit."""
    if len(args.weight_decay) == 1:
        return args.weight_decay * exits
    return np.linspace(args.weight_decay[0], args.weight_decay[1], exits).tolist()


def parameter_groups(model: MultiExitNetwork, args: argparse.Namespace) -> list[dict]:
    """One group per exit (block n + head n) for MSDNet; a single group for RANet (docs/method.md)."""
    if args.arch == "ranet":  # args.check_training allows it one value only
        return [{"params": list(model.parameters()), "weight_decay": args.weight_decay[0]}]
    return [{"params": params, "weight_decay": decay} for params, decay in
            zip(param_groups_by_stage(model), weight_decays(args, model.num_exits))]


def build_optimizer(model: MultiExitNetwork, args: argparse.Namespace,
                    device: torch.device) -> torch.optim.SGD:
    """SGD over the per-exit (MSDNet) or single (RANet) parameter groups."""
    return make_sgd(parameter_groups(model, args), args.lr_f, args.momentum, device)


def build_scheduler(optimizer: torch.optim.Optimizer,
                    args: argparse.Namespace) -> torch.optim.lr_scheduler.MultiStepLR:
    """The step schedule of --lr_milestones and --lr_gamma, stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_milestones,
                                                gamma=args.lr_gamma)


def schedule_text(args: argparse.Namespace) -> str:
    """The learning-rate schedule in words, e.g. 'lr 0.1, x0.1 after epochs 15, 22 (default
    schedule: 50%, 75% of --epochs 30)'."""
    if not args.lr_milestones:
        return f"lr {args.lr_f:g}, constant (no --lr_milestones)"
    text = (f"lr {args.lr_f:g}, x{args.lr_gamma:g} after epoch{'s' * (len(args.lr_milestones) > 1)} "
            f"{', '.join(map(str, args.lr_milestones))}")
    rule = args.default_lr_schedule
    return f"{text} (default schedule: {rule})" if rule else text


def scheduled_lr(args: argparse.Namespace, epoch: int) -> float:
    """The learning rate of 0-based `epoch` as the flags state it: --lr times --lr_gamma once
    per milestone passed, in decimal arithmetic (0.1, then 0.01). The optimiser holds the
    float32 nearest to each step's product (0.10000000149011612, then 0.010000001)."""
    decays = sum(milestone <= epoch for milestone in args.lr_milestones)
    return float(Decimal(repr(args.lr_f)) * Decimal(repr(args.lr_gamma)) ** decays)


def training_state(model: MultiExitNetwork, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, objective: nn.Module,
                   scaler: torch.amp.GradScaler, epochs_done: int, config: dict,
                   best_metric: float | None, summary: Sequence[dict] = ()) -> dict:
    """Everything `--resume` restores, as model_latest.pth holds it (`summary`: the
    summary.csv rows so far)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "objective": objective.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epochs_done, "rng": capture_rng_state(),
            "config": config, "best_metric": best_metric, "summary": list(summary)}


class Trainer:
    """Everything one training run holds: model, optimiser, data, run directory, progress."""

    def __init__(self, args: argparse.Namespace, info: DistInfo, device: torch.device):
        self.args, self.info, self.device = args, info, device
        self.run_dir = Path(args.result_dir)
        self.config = {**run_config(args), "provenance": [provenance(device, info.world_size)]}
        splits = build_splits(args, self.run_dir)
        self.train_loader = train_loader(splits.train, args, info, device)
        data = dataset_info(args)
        self.gpu_batches = (GpuBatches.from_dataset(
            splits.train, args.batch_size, device, args.seed, rank=info.rank,
            world_size=info.world_size, flip=data.flip, mean=data.mean, std=data.std)
            if use_gpu_data(args, device) else None)
        self.val_loader = (eval_loader(splits.val, args.eval_batch_size, args.workers, info, device)
                           if splits.val is not None else None)
        seed_everything(args.seed)
        self.model = self._build_model()
        self.objective = build_objective(args, self.model.num_exits).to(device)
        newest = newest_checkpoint(self.run_dir, args.resume)
        if args.init_from is not None and newest is None:  # a fresh start, also under --resume auto
            self._init_from(Path(args.init_from))
        self.optimizer = build_optimizer(self.model, args, device)
        self.scheduler = build_scheduler(self.optimizer, args)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
        self.start_epoch, self.best_metric, self.summary_rows = 0, None, []
        self.resumed_from: Optional[Path] = None
        self.partial_epoch: Optional[PartialEpoch] = None
        if newest is not None:
            self._resume(*newest)
        self.recovery = RecoveryTrigger(args.checkpoint_interval, device, info.is_distributed)
        self.epoch_started = time.perf_counter()
        mode = resolve_step_mode(args, device, info.world_size)
        self.train_step = build_train_step(build_boosted(args, self._training_model()),
                                           self.objective, self.optimizer, mode, args.amp,
                                           args.channels_last, scaler=self.scaler)
        self.eval_forward = build_eval_forward(build_boosted(args, self.model), mode, args.amp,
                                               args.channels_last)
        self.log = RunLog(self.run_dir, info.is_main)

    def _build_model(self) -> MultiExitNetwork:
        """The network on the device (channels-last before any DDP wrapping, so gradient buckets
        match); SyncBatchNorm under torchrun where the dataset asks for it (ImageNet)."""
        model = build_model(self.args)
        if self.info.is_distributed and dataset_info(self.args).sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.device, memory_format=memory_format_for(self.args.channels_last))

    def _training_model(self) -> nn.Module:
        """The model the step calls: DDP-wrapped under torchrun, the plain network otherwise."""
        if not self.info.is_distributed:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # static_graph: every step runs the same exits, and small configurations can leave
        # parameters unused (e.g. finest-scale layers pruned away), which DDP must know.
        return DistributedDataParallel(self.model, device_ids=device_ids, static_graph=True)

    def _init_from(self, path: Path) -> None:
        """Start from another run's (or an imported checkpoint's) weights; nothing else of it."""
        _, checkpoint_file = locate_checkpoint(path, "--init-from")
        checkpoint = load_checkpoint(checkpoint_file, "--init-from")
        load_weights(self.model, checkpoint["model"], checkpoint_file, "--init-from",
                     "these flags (pass the model flags of the run it comes from)")

    def _resume(self, path: Path, checkpoint: dict) -> None:
        """Restore model, optimiser, scheduler, objective, scaler, RNG and records from an epoch
        checkpoint, or from a recovery checkpoint with the position inside its epoch."""
        saved = checkpoint.get("config", {})
        for key in RESUME_MUST_MATCH:
            if key in saved and saved[key] != self.config[key]:
                raise UserError(f"--resume: {path} was trained with {key}={saved[key]!r}, these "
                                f"flags give {self.config[key]!r}; resume with the same flags")
        if "step" in checkpoint:
            self.partial_epoch = PartialEpoch.from_checkpoint(path, checkpoint, self.config,
                                                              self.info.world_size)
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.objective.load_state_dict(checkpoint["objective"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
        except (KeyError, RuntimeError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise UserError(f"--resume: {path} does not fit this model ({reason})") from None
        restore_rng_state(checkpoint["rng"])
        self.start_epoch, self.best_metric = checkpoint["epoch"], checkpoint["best_metric"]
        self.summary_rows = checkpoint.get("summary", [])
        self.config["provenance"] = saved.get("provenance", []) + self.config["provenance"]
        self.resumed_from = path

    def fit(self) -> MultiExitNetwork:
        """Train the remaining epochs and return the trained (unwrapped) model."""
        args = self.args
        try:
            with self.recovery.signals:
                images = len(self.train_loader.sampler) * self.info.world_size
                self.log.line(f"{self._start_description()}: {args.arch} "
                              f"({self.model.num_exits} exits, loss {args.loss}) on "
                              f"{args.dataset}: {images} training images, {self.info.world_size} "
                              f"process(es) on {self.device}; run directory {self.run_dir}")
                self.log.line(schedule_text(args))
                if self.resumed_from is not None and self.info.is_main:
                    self._write_records()  # in case a kill came between checkpoint and records
                for epoch in range(self.start_epoch, args.epochs):
                    self._run_epoch(epoch)
                    stop = self.recovery.stop_requested()
                    if stop is not None and epoch + 1 < args.epochs:
                        self._stop(stop, f"after epoch {epoch + 1}",
                                   self.run_dir / LATEST_CHECKPOINT)
            self.log.line(f"done: checkpoints in {self.run_dir}")
        finally:
            self.log.close()
        return self.model

    def _start_description(self) -> str:
        """'training', or where the resume continues from."""
        if self.resumed_from is None:
            return "training"
        if self.partial_epoch is not None:
            return (f"resuming epoch {self.start_epoch + 1} after step {self.partial_epoch.step} "
                    f"from {self.resumed_from.name}")
        return f"resuming after epoch {self.start_epoch} from {self.resumed_from.name}"

    def _run_epoch(self, epoch: int) -> None:
        """Train one epoch, validate, step the schedule, log and checkpoint."""
        lr = scheduled_lr(self.args, epoch)
        resumed_seconds = self.partial_epoch.seconds if self.partial_epoch is not None else 0.0
        self.epoch_started = time.perf_counter() - resumed_seconds
        train_metrics = self._train_epoch(epoch)
        seconds = time.perf_counter() - self.epoch_started
        distributed.broadcast_buffers_(self.model)
        distributed.broadcast_buffers_(self.objective)
        val_metrics = self.evaluate(self.val_loader) if self.val_loader is not None else None
        self.scheduler.step()
        images_per_second = train_metrics.count / seconds
        is_best = val_metrics is None or (self.best_metric is None
                                          or val_metrics.accuracy[-1] > self.best_metric)
        if val_metrics is not None and is_best:
            self.best_metric = val_metrics.accuracy[-1]
        per_exit = {**train_metrics.scalars("train"),
                    **(val_metrics.scalars("val") if val_metrics is not None else {})}
        scalars = {**per_exit, "lr": lr, "images_per_s": images_per_second}
        self.summary_rows.append({"epoch": epoch + 1, "lr": lr, "seconds": seconds,
                                  "images_per_s": images_per_second,
                                  **{tag.replace("/", "_"): value
                                     for tag, value in per_exit.items()}})
        text = (f"epoch {epoch + 1}/{self.args.epochs} lr {lr:.4g} train {train_metrics.summary()}"
                + (f" | val {val_metrics.summary()}" if val_metrics is not None else "")
                + f" | {images_per_second:.0f} img/s, {seconds:.1f} s, ETA {self._eta(epoch)}"
                + (" *" if is_best else ""))
        self.log.line(text)
        self.log.scalars(scalars, epoch + 1)
        if self.info.is_main:
            self._save(epoch + 1, is_best)
        self.recovery.restart()

    def _eta(self, epoch: int) -> str:
        """Time left after `epoch` at the mean epoch duration so far."""
        durations = [row["seconds"] for row in self.summary_rows]
        return duration_text((self.args.epochs - epoch - 1) * sum(durations) / len(durations))

    def _train_epoch(self, epoch: int) -> ExitMetrics:
        """One pass over this rank's shard; metrics synchronised every --log-interval steps only."""
        args = self.args
        resumed, self.partial_epoch = self.partial_epoch, None
        first = resumed.step if resumed is not None else 0
        batches, count = self._epoch_batches(epoch, first)
        self.model.train()
        self.objective.train()
        steps = count if args.max_steps_per_epoch is None else min(count, args.max_steps_per_epoch)
        sums = MetricSums(self.model.num_exits, self.device)
        if resumed is not None:
            resumed.restore_rng(self.info.rank)
            sums.load_state_dict(resumed.ranks[self.info.rank]["sums"])
        first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=self.device)
        interval = IntervalSpeed(self.info.world_size)
        # The bar only on a terminal (disable=None): in a log file its frames bury the epoch lines.
        with tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{args.epochs}",
                  leave=False, disable=None if self.info.is_main else True,
                  dynamic_ncols=True) as bar:
            for step, (images, targets) in zip(range(first, steps), batches):
                result = self.train_step(images.to(self.device, non_blocking=True),
                                         targets.to(self.device, non_blocking=True))
                sums.add(result.per_exit_losses, result.per_exit_correct, len(targets))
                first_bad_step = torch.where(
                    ~torch.isfinite(result.loss) & (first_bad_step == NO_BAD_STEP), step,
                    first_bad_step)
                interval.images += len(targets)
                bar.update()
                at_sync_point = (step + 1) % args.log_interval == 0 or step + 1 == steps
                if at_sync_point:
                    self._stop_if_not_finite(first_bad_step, epoch)
                    bar.set_postfix_str(f"{sums.metrics(across_ranks=False).summary()} "
                                        f"{interval.images_per_second():.0f} img/s")
                self._save_recovery_if_due(epoch, step + 1, step + 1 == steps, sums,
                                           first_bad_step, at_sync_point)
        return sums.metrics(across_ranks=True)

    def _epoch_batches(self, epoch: int, first: int = 0
                       ) -> tuple[Iterable[tuple[Tensor, Tensor]], int]:
        """This epoch's training batches from batch `first` on (device-resident with --gpu-data)
        and how many the whole epoch has."""
        if self.gpu_batches is not None:
            return self.gpu_batches.epoch(epoch, first), len(self.gpu_batches)
        start_epoch(self.train_loader, self.args.seed, epoch, self.info.rank)
        batches = remaining_batches(self.train_loader, first) if first else self.train_loader
        return batches, len(self.train_loader)

    def _save_recovery_if_due(self, epoch: int, steps_done: int, epoch_done: bool,
                              sums: MetricSums, first_bad_step: Tensor, at_sync_point: bool
                              ) -> None:
        """Write model_recovery.pth when --checkpoint-interval has passed (unless the epoch
        checkpoint is next anyway) or a stop signal came; after a signal, stop once saved."""
        save, stop = self.recovery.poll(at_sync_point)
        if not save or epoch_done and stop is None:
            return
        self._stop_if_not_finite(first_bad_step, epoch)
        ranks = distributed.all_gather_objects({"rng": capture_rng_state(),
                                                "sums": sums.state_dict()})
        path = self.run_dir / RECOVERY_CHECKPOINT
        if self.info.is_main:
            save_checkpoint({**self._training_state(epoch), "step": steps_done, "ranks": ranks,
                             "world_size": self.info.world_size,
                             "epoch_seconds": time.perf_counter() - self.epoch_started}, path)
            self.log.line(f"recovery checkpoint: epoch {epoch + 1} step {steps_done} in {path}")
        distributed.barrier()  # no rank exits before rank 0 has saved
        self.recovery.restart()
        if stop is not None:
            self._stop(stop, f"in epoch {epoch + 1} after step {steps_done}", path)

    def _stop(self, signal_name: str, where: str, saved: Path) -> None:
        """Log and raise Preempted: the run stopped on a signal after saving `saved`."""
        stop = preempted(signal_name, where, saved)
        self.log.line(str(stop))
        raise stop

    def _stop_if_not_finite(self, first_bad_step: Tensor, epoch: int) -> None:
        """Raise (on every rank alike) if any rank has seen a non-finite loss this epoch."""
        bad_step = int(distributed.all_reduce_(first_bad_step.clone(), ReduceOp.MIN))
        if bad_step != NO_BAD_STEP:
            kept = (f"the last good checkpoint {self.run_dir / LATEST_CHECKPOINT} (epoch "
                    f"{epoch}) is kept" if epoch > 0 else "no checkpoint was written")
            raise UserError(f"non-finite loss at epoch {epoch + 1}, step {bad_step + 1}; training "
                            f"stopped and {kept}; try a lower --lr or no --amp")

    @torch.no_grad()
    def evaluate(self, loader) -> ExitMetrics:
        """Per-exit loss and accuracy of the evaluation-time outputs (F_n or f_n) over all ranks."""
        self.model.eval()
        self.objective.eval()
        sums = MetricSums(self.model.num_exits, self.device)
        for images, targets in loader:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            outputs = self.eval_forward(images)
            losses = torch.stack([F.cross_entropy(output.float(), targets) for output in outputs])
            sums.add(losses, correct_counts(outputs, targets), len(targets))
        return sums.metrics(across_ranks=True)

    def _training_state(self, epochs_done: int) -> dict:
        """Everything a resume restores, after `epochs_done` whole epochs."""
        return training_state(self.model, self.optimizer, self.scheduler, self.objective,
                              self.scaler, epochs_done, self.config, self.best_metric,
                              self.summary_rows)

    def _save(self, epochs_done: int, is_best: bool) -> None:
        """Write model_latest.pth (and model_best.pth if best) atomically, drop the superseded
        recovery checkpoint, then the records; config.json only ever follows a checkpoint."""
        best = [self.run_dir / BEST_CHECKPOINT] if is_best else []
        save_checkpoint(self._training_state(epochs_done), self.run_dir / LATEST_CHECKPOINT, best)
        (self.run_dir / RECOVERY_CHECKPOINT).unlink(missing_ok=True)
        self._write_records()

    def _write_records(self) -> None:
        """summary.csv and config.json, rewritten from the state the checkpoints carry."""
        write_summary(self.run_dir, self.summary_rows)
        write_config(self.run_dir, self.config)


def run_training(args: argparse.Namespace) -> MultiExitNetwork:
    """Train as `args` says, in this process or as one rank of a torchrun job; returns the model."""
    info = distributed.launch_info()
    run_dir = Path(args.result_dir)
    distributed.use_threads(args.threads)
    with deterministic_algorithms(args.deterministic):
        device = distributed.resolve_device(args.device, info)
        distributed.init_process_group(info, device)
        try:
            check_run_dir(run_dir, args.resume)  # refuse before touching anything
            if args.init_from is not None and args.resume is not True:
                locate_checkpoint(Path(args.init_from), "--init-from")
            with owned_run_dir(run_dir) if info.is_main else contextlib.nullcontext():
                check_run_dir(run_dir, args.resume)  # again, now that no other training writes
                distributed.barrier()
                if device.type == "cuda":
                    torch.backends.cudnn.benchmark = not args.deterministic
                return Trainer(args, info, device).fit()
        except OSError as error:  # disk full, vanished or unwritable files: one line
            where = error.filename or f"--result_dir {run_dir}"
            raise UserError(f"{where}: {error.strerror or error}") from None
        finally:
            distributed.destroy_process_group()

