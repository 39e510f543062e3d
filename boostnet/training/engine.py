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

import contextlib
import random
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import ReduceOp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from boostnet.data.gpu_batches import GpuBatches, use_gpu_data
from boostnet.data.loaders import build_splits, eval_loader, remaining_batches, start_epoch, train_loader
from boostnet.runs.layout import BEST_CHECKPOINT, LATEST_CHECKPOINT, RECOVERY_CHECKPOINT
from boostnet.runs.lock import owned_run_dir
from boostnet.runs.records import (
    RunLog,
    check_run_dir,
    duration_text,
    locate_checkpoint,
    provenance,
    write_config,
    write_summary,
)
from boostnet.runs.recovery import PartialEpoch, RecoveryTrigger, newest_checkpoint, preempted
from boostnet.training.ema import WeightEMA
from boostnet.training.metrics import ExitMetrics, IntervalSpeed, MetricSums
from boostnet.training.optim import build_optimizer, build_scheduler, schedule_text, scheduled_lr
from boostnet.training.settings import TrainingJob
from boostnet.training.step import (
    EvalForward,
    TrainStep,
    build_eval_forward,
    build_train_step,
    memory_format_for,
    resolve_step_mode,
)
from models.multi_exit import MultiExitNetwork
from utils import distributed
from utils.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    load_weights,
    restore_rng_state,
    save_checkpoint,
)
from utils.determinism import deterministic_algorithms
from utils.distributed import DistInfo
from utils.errors import UserError
from utils.metrics import correct_counts

NO_BAD_STEP = 2**62


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_state(
    model: MultiExitNetwork,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    objective: nn.Module,
    scaler: torch.amp.GradScaler,
    epochs_done: int,
    config: dict,
    best_metric: float | None,
    summary: Sequence[dict] = (),
    ema: Optional[WeightEMA] = None,
) -> dict:
    """Everything `--resume` restores, as model_latest.pth holds it (`summary`: the
    summary.csv rows so far; `model_ema`: the --model-ema average, only with one)."""
    averaged = {} if ema is None else {"model_ema": ema.state_dict()}
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "objective": objective.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epochs_done,
        "rng": capture_rng_state(),
        "config": config,
        "best_metric": best_metric,
        "summary": list(summary),
        **averaged,
    }


class Trainer:
    """Everything one training run holds: model, optimiser, data, run directory, progress."""

    def __init__(self, job: TrainingJob, info: DistInfo, device: torch.device):
        self.job, self.train, self.info, self.device = job, job.train, info, device
        self.run_dir = job.run.result_dir
        self.config = {**job.record, "provenance": [provenance(device, info.world_size)]}
        splits = build_splits(job.data, job.train.use_valid, job.train.seed, self.run_dir)
        self.train_loader = train_loader(
            splits.train, job.train.batch_size, job.data.workers, job.train.seed, info, device
        )
        self.gpu_batches = self._gpu_batches(splits.train)
        self.val_loader = (
            eval_loader(splits.val, job.data.eval_batch_size, job.data.workers, info, device)
            if splits.val is not None
            else None
        )
        seed_everything(job.train.seed)
        self.model = self._build_model()
        self.objective = job.objective.loss(self.model.num_exits).to(device)
        newest = newest_checkpoint(self.run_dir, job.run.resume)
        if newest is None:  # a fresh start: the backbone's own initialisation (e.g. --pretrained)
            job.model.initialise(self.model)
        if job.train.init_from is not None and newest is None:  # a fresh start, also under --resume auto
            self._init_from(job.train.init_from)
        self.optimizer = build_optimizer(
            self.model, job.train, job.model.backbone.per_exit_weight_decay, device
        )
        self.scheduler = build_scheduler(self.optimizer, job.train)
        self.scaler = torch.amp.GradScaler(device.type, enabled=job.speed.amp == "fp16")
        self.ema = WeightEMA(self.model, job.train.model_ema_decay) if job.train.model_ema else None
        self.start_epoch, self.best_metric, self.summary_rows = 0, None, []
        self.resumed_from: Optional[Path] = None
        self.partial_epoch: Optional[PartialEpoch] = None
        if newest is not None:
            self._resume(*newest)
        self.recovery = RecoveryTrigger(job.run.checkpoint_interval, device, info.is_distributed)
        self.epoch_started = time.perf_counter()
        self.train_step, self.eval_forward = self._build_steps()
        self.log = RunLog(self.run_dir, info.is_main)

    def _gpu_batches(self, train_set: Dataset) -> Optional[GpuBatches]:
        """The training set resident on the device, augmented there (--gpu-data), or None."""
        job, info, data = self.job, self.info, self.job.data.dataset
        if not use_gpu_data(job.speed.gpu_data, data, self.device):
            return None
        return GpuBatches.from_dataset(
            train_set,
            job.train.batch_size,
            self.device,
            job.train.seed,
            rank=info.rank,
            world_size=info.world_size,
            flip=data.flip,
            mean=data.mean,
            std=data.std,
        )

    def _build_steps(self) -> tuple[TrainStep, EvalForward]:
        """The training step and the validation forward for the step mode the speed flags ask for
        (built after any resume, so a captured step holds the restored state)."""
        job = self.job
        mode = resolve_step_mode(job.speed, self.device, self.info.world_size, job.train.opt)
        exits = self.model.num_exits
        train_step = build_train_step(
            job.objective.network(self._training_model(), exits),
            self.objective,
            self.optimizer,
            mode,
            job.speed.amp,
            job.speed.channels_last,
            scaler=self.scaler,
        )
        eval_forward = build_eval_forward(
            job.objective.network(self._validated_model(), exits),
            mode,
            job.speed.amp,
            job.speed.channels_last,
        )
        return train_step, eval_forward

    def _build_model(self) -> MultiExitNetwork:
        """The network on the device (channels-last before any DDP wrapping, so gradient buckets
        match); SyncBatchNorm under torchrun where the dataset asks for it (ImageNet)."""
        model = self.job.model.build()
        if self.info.is_distributed and self.job.data.dataset.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.device, memory_format=memory_format_for(self.job.speed.channels_last))

    def _validated_model(self) -> MultiExitNetwork:
        """What validation (and so model_best.pth's choice) evaluates: the --model-ema average when
        there is one (what evaluation will read), else the live network."""
        return self.model if self.ema is None else self.ema.module

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
        load_weights(
            self.model,
            checkpoint["model"],
            checkpoint_file,
            "--init-from",
            "these flags (pass the model flags of the run it comes from)",
        )

    def _resume(self, path: Path, checkpoint: dict) -> None:
        """Restore model, optimiser, scheduler, objective, scaler, RNG and records from an epoch
        checkpoint, or from a recovery checkpoint with the position inside its epoch."""
        saved = checkpoint.get("config", {})
        if "step" in checkpoint:
            self.partial_epoch = PartialEpoch.from_checkpoint(path, checkpoint, self.info.world_size)
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.objective.load_state_dict(checkpoint["objective"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            self._resume_ema(checkpoint)
        except (KeyError, RuntimeError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise UserError(f"--resume: {path} does not fit this model ({reason})") from None
        restore_rng_state(checkpoint["rng"])
        self.start_epoch, self.best_metric = checkpoint["epoch"], checkpoint["best_metric"]
        self.summary_rows = checkpoint.get("summary", [])
        self.config["provenance"] = saved.get("provenance", []) + self.config["provenance"]
        self.resumed_from = path

    def _resume_ema(self, checkpoint: dict) -> None:
        """The saved --model-ema average; a checkpoint without one (a run that had none) starts it
        at the resumed weights."""
        if self.ema is None:
            return
        if "model_ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["model_ema"])
        else:
            self.ema.reset(self.model)

    def fit(self) -> MultiExitNetwork:
        """Train the remaining epochs and return the trained (unwrapped) model."""
        job, epochs = self.job, self.train.epochs
        try:
            with self.recovery.signals:
                images = len(self.train_loader.sampler) * self.info.world_size
                self.log.line(
                    f"{self._start_description()}: {job.model.arch} "
                    f"({self.model.num_exits} exits, loss {job.objective.name}) on "
                    f"{job.data.dataset.name}: {images} training images, {self.info.world_size} "
                    f"process(es) on {self.device}; run directory {self.run_dir}"
                )
                self.log.line(schedule_text(self.train))
                if self.ema is not None:
                    self.log.line(
                        f"weight EMA, decay {self.train.model_ema_decay:g} per step: validation "
                        "and evaluation use the averaged weights"
                    )
                if self.resumed_from is not None and self.info.is_main:
                    self._write_records()  # in case a kill came between checkpoint and records
                for epoch in range(self.start_epoch, epochs):
                    self._run_epoch(epoch)
                    stop = self.recovery.stop_requested()
                    if stop is not None and epoch + 1 < epochs:
                        self._stop(stop, f"after epoch {epoch + 1}", self.run_dir / LATEST_CHECKPOINT)
            self.log.line(f"done: checkpoints in {self.run_dir}")
        finally:
            self.log.close()
        return self.model

    def _start_description(self) -> str:
        """'training', or where the resume continues from."""
        if self.resumed_from is None:
            return "training"
        if self.partial_epoch is not None:
            return (
                f"resuming epoch {self.start_epoch + 1} after step {self.partial_epoch.step} "
                f"from {self.resumed_from.name}"
            )
        return f"resuming after epoch {self.start_epoch} from {self.resumed_from.name}"

    def _run_epoch(self, epoch: int) -> None:
        """Train one epoch, validate, step the schedule, log and checkpoint."""
        lr = scheduled_lr(self.train, epoch)
        resumed_seconds = self.partial_epoch.seconds if self.partial_epoch is not None else 0.0
        self.epoch_started = time.perf_counter() - resumed_seconds
        train_metrics = self._train_epoch(epoch)
        seconds = time.perf_counter() - self.epoch_started
        distributed.broadcast_buffers_(self.model)
        distributed.broadcast_buffers_(self.objective)
        if self.ema is not None:
            distributed.broadcast_buffers_(self.ema.module)
        val_metrics = self.evaluate(self.val_loader) if self.val_loader is not None else None
        self.scheduler.step()
        images_per_second = train_metrics.count / seconds
        is_best = val_metrics is None or (
            self.best_metric is None or val_metrics.accuracy[-1] > self.best_metric
        )
        if val_metrics is not None and is_best:
            self.best_metric = val_metrics.accuracy[-1]
        per_exit = {
            **train_metrics.scalars("train"),
            **(val_metrics.scalars("val") if val_metrics is not None else {}),
        }
        scalars = {**per_exit, "lr": lr, "images_per_s": images_per_second}
        self.summary_rows.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "seconds": seconds,
                "images_per_s": images_per_second,
                **{tag.replace("/", "_"): value for tag, value in per_exit.items()},
            }
        )
        text = (
            f"epoch {epoch + 1}/{self.train.epochs} lr {lr:.4g} train {train_metrics.summary()}"
            + (f" | val {val_metrics.summary()}" if val_metrics is not None else "")
            + f" | {images_per_second:.0f} img/s, {seconds:.1f} s, ETA {self._eta(epoch)}"
            + (" *" if is_best else "")
        )
        self.log.line(text)
        self.log.scalars(scalars, epoch + 1)
        if self.info.is_main:
            self._save(epoch + 1, is_best)
        self.recovery.restart()

    def _eta(self, epoch: int) -> str:
        """Time left after `epoch` at the mean epoch duration so far."""
        durations = [row["seconds"] for row in self.summary_rows]
        return duration_text((self.train.epochs - epoch - 1) * sum(durations) / len(durations))

    def _train_epoch(self, epoch: int) -> ExitMetrics:
        """One pass over this rank's shard; metrics synchronised every --log-interval steps only."""
        train = self.train
        resumed, self.partial_epoch = self.partial_epoch, None
        first = resumed.step if resumed is not None else 0
        batches, count = self._epoch_batches(epoch, first)
        self.model.train()
        self.objective.train()
        steps = count if train.max_steps_per_epoch is None else min(count, train.max_steps_per_epoch)
        sums = MetricSums(self.model.num_exits, self.device)
        if resumed is not None:
            resumed.restore_rng(self.info.rank)
            sums.load_state_dict(resumed.ranks[self.info.rank]["sums"])
        first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=self.device)
        interval = IntervalSpeed(self.info.world_size)
        # The bar only on a terminal (disable=None): in a log file its frames bury the epoch lines.
        with tqdm(
            total=steps,
            initial=first,
            desc=f"epoch {epoch + 1}/{train.epochs}",
            leave=False,
            disable=None if self.info.is_main else True,
            dynamic_ncols=True,
        ) as bar:
            for step, (images, targets) in zip(range(first, steps), batches):
                result = self.train_step(
                    images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
                )
                if self.ema is not None:
                    self.ema.update(self.model)
                sums.add(result.per_exit_losses, result.per_exit_correct, len(targets))
                first_bad_step = torch.where(
                    ~torch.isfinite(result.loss) & (first_bad_step == NO_BAD_STEP), step, first_bad_step
                )
                interval.images += len(targets)
                bar.update()
                at_sync_point = (step + 1) % train.log_interval == 0 or step + 1 == steps
                if at_sync_point:
                    self._stop_if_not_finite(first_bad_step, epoch)
                    bar.set_postfix_str(
                        f"{sums.metrics(across_ranks=False).summary()} "
                        f"{interval.images_per_second():.0f} img/s"
                    )
                self._save_recovery_if_due(
                    epoch, step + 1, step + 1 == steps, sums, first_bad_step, at_sync_point
                )
        return sums.metrics(across_ranks=True)

    def _epoch_batches(self, epoch: int, first: int = 0) -> tuple[Iterable[tuple[Tensor, Tensor]], int]:
        """This epoch's training batches from batch `first` on (device-resident with --gpu-data)
        and how many the whole epoch has."""
        if self.gpu_batches is not None:
            return self.gpu_batches.epoch(epoch, first), len(self.gpu_batches)
        start_epoch(self.train_loader, self.train.seed, epoch, self.info.rank)
        batches = remaining_batches(self.train_loader, first) if first else self.train_loader
        return batches, len(self.train_loader)

    def _save_recovery_if_due(
        self,
        epoch: int,
        steps_done: int,
        epoch_done: bool,
        sums: MetricSums,
        first_bad_step: Tensor,
        at_sync_point: bool,
    ) -> None:
        """Write model_recovery.pth when --checkpoint-interval has passed (unless the epoch
        checkpoint is next anyway) or a stop signal came; after a signal, stop once saved."""
        save, stop = self.recovery.poll(at_sync_point)
        if not save or epoch_done and stop is None:
            return
        self._stop_if_not_finite(first_bad_step, epoch)
        ranks = distributed.all_gather_objects({"rng": capture_rng_state(), "sums": sums.state_dict()})
        path = self.run_dir / RECOVERY_CHECKPOINT
        if self.info.is_main:
            save_checkpoint(
                {
                    **self._training_state(epoch),
                    "step": steps_done,
                    "ranks": ranks,
                    "world_size": self.info.world_size,
                    "epoch_seconds": time.perf_counter() - self.epoch_started,
                },
                path,
            )
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
            kept = (
                f"the last good checkpoint {self.run_dir / LATEST_CHECKPOINT} (epoch {epoch}) is kept"
                if epoch > 0
                else "no checkpoint was written"
            )
            raise UserError(
                f"non-finite loss at epoch {epoch + 1}, step {bad_step + 1}; training "
                f"stopped and {kept}; try a lower --lr or no --amp"
            )

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
        return training_state(
            self.model,
            self.optimizer,
            self.scheduler,
            self.objective,
            self.scaler,
            epochs_done,
            self.config,
            self.best_metric,
            self.summary_rows,
            self.ema,
        )

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


def run_training(job: TrainingJob) -> MultiExitNetwork:
    """Train as `job` says, in this process or as one rank of a torchrun job; returns the model."""
    info = distributed.launch_info()
    run_dir, resume = job.run.result_dir, job.run.resume
    distributed.use_threads(job.runtime.threads)
    with deterministic_algorithms(job.train.deterministic):
        device = distributed.resolve_device(job.runtime.device, info)
        distributed.init_process_group(info, device)
        try:
            check_run_dir(run_dir, resume)  # refuse before touching anything
            if job.train.init_from is not None and resume is not True:
                locate_checkpoint(job.train.init_from, "--init-from")
            with owned_run_dir(run_dir) if info.is_main else contextlib.nullcontext():
                check_run_dir(run_dir, resume)  # again, now that no other training writes
                distributed.barrier()
                if device.type == "cuda":
                    torch.backends.cudnn.benchmark = not job.train.deterministic
                return Trainer(job, info, device).fit()
        except OSError as error:  # disk full, vanished or unwritable files: one line
            where = error.filename or f"--result_dir {run_dir}"
            raise UserError(f"{where}: {error.strerror or error}") from None
        finally:
            distributed.destroy_process_group()
