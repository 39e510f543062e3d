"""Checkpoints of the official BoostNet code and of MSDNet-PyTorch, turned into our run directories.

`import_run` reads such a file safely (see :func:`utils.checkpoint.read_checkpoint`), detects
its layout, renames every tensor onto the model the flags build (:mod:`models.foreign`),
refuses any misfit, and writes a run directory: config.json, model_best.pth and
imported_from.json (split.json with --use-valid), plus model_latest.pth when the file's optimiser
state can be carried over so that `--resume` continues the original run. docs/checkpoints.md describes it all.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from boostnet.data.loaders import load_or_create_split, official_sets
from boostnet.runs.records import BEST_CHECKPOINT, LATEST_CHECKPOINT, write_config
from boostnet.training.engine import training_state
from boostnet.training.optim import build_optimizer, build_scheduler
from boostnet.training.settings import TrainingJob
from models.foreign import original_names
from models.multi_exit import MultiExitNetwork, param_groups_by_stage
from utils.checkpoint import (
    file_digest,
    first_mismatch,
    read_checkpoint,
    save_checkpoint,
    strip_wrapper_prefixes,
)
from utils.errors import UserError
from utils.json_files import write_json

BOOSTNET = "official BoostNet code"
MSDNET_PYTORCH = "MSDNet-PyTorch"
UNDERSTOOD = (
    "the official BoostNet code's {'epoch', 'state_dict': {'model': weights}, "
    "'optimizer', 'scheduler'} and MSDNet-PyTorch's {'epoch', 'arch', 'state_dict': "
    "weights, 'best_prec1', 'optimizer'}"
)
BACKBONE_PREFIXES = {"ranet": ("scale_flows.", "FirstLayer."), "msdnet": ("blocks.", "classifier.")}
IMPORT_NOTE = "imported_from.json"
FLAG = "SRC"


@dataclass
class ForeignCheckpoint:
    """What an original checkpoint holds, in its own names (wrapper prefixes removed)."""

    layout: str
    weights: dict[str, Tensor]
    epochs_done: int | None
    optimizer: dict[str, Any] | None
    extras: dict[str, Any]


def is_weights(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(key, str) and isinstance(tensor, Tensor) for key, tensor in value.items())
    )


def parse_foreign(checkpoint: Any, path: Path) -> ForeignCheckpoint:
    """Detect the layout of a loaded checkpoint; anything but the two understood ones: UserError."""
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        raise UserError(
            f"{FLAG}: {path} is already a checkpoint of this project: evaluate it "
            f"with --evaluate-from or fine-tune it with --init-from"
        )
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if isinstance(state, dict) and is_weights(state.get("model")):
        layout, weights = BOOSTNET, state["model"]
    elif is_weights(state):
        layout, weights = MSDNET_PYTORCH, state
    else:
        entries = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UserError(
            f"{FLAG}: {path} is in no checkpoint format understood here (it holds "
            f"{entries}); understood are {UNDERSTOOD}"
        )
    epoch = checkpoint.get("epoch")
    # Both codebases store the 0-based index of the last finished epoch; we count epochs done.
    epochs_done = int(epoch) + 1 if isinstance(epoch, (int, np.integer)) else None
    optimizer = checkpoint.get("optimizer")
    return ForeignCheckpoint(
        layout,
        strip_wrapper_prefixes(weights),
        epochs_done,
        optimizer if isinstance(optimizer, dict) else None,
        source_details(checkpoint),
    )


def source_details(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """MSDNet-PyTorch's architecture name and best top-1, worth keeping in the import note."""
    details = {}
    if isinstance(checkpoint.get("arch"), str):
        details["arch"] = checkpoint["arch"]
    best = checkpoint.get("best_prec1")
    if isinstance(best, (int, float, np.number)) or (isinstance(best, Tensor) and best.numel() == 1):
        details["best_prec1"] = float(best)
    return details


def backbone_of(weights: dict[str, Tensor]) -> str | None:
    """'ranet' or 'msdnet' from the original's top-level module names, None if neither."""
    for backbone, prefixes in BACKBONE_PREFIXES.items():
        if any(key.startswith(prefixes) for key in weights):
            return backbone
    return None


def check_backbone(foreign: ForeignCheckpoint, arch: str, path: Path) -> None:
    found = backbone_of(foreign.weights)
    wanted = "ranet" if arch == "ranet" else "msdnet"
    if found is not None and found != wanted:
        prefixes = ", ".join(f"{prefix}*" for prefix in BACKBONE_PREFIXES[found])
        raise UserError(
            f"--arch: {path} holds a {found} (keys {prefixes}) but --arch {arch} "
            f"builds a {wanted}; pass the model flags of the run that wrote it"
        )


def mapped_weights(
    model: MultiExitNetwork, foreign: ForeignCheckpoint, path: Path, names: dict[str, str]
) -> dict[str, Tensor]:
    """Our state dict from the original's tensors, by name; every tensor used and filled, or stop."""
    expected = {names[key]: tensor for key, tensor in model.state_dict().items()}
    mismatch = first_mismatch(expected, foreign.weights)
    if mismatch is not None:
        raise UserError(
            f"{FLAG}: {path} does not fit the model these flags describe (check "
            f"--dataset, --nBlocks, --step, --growthRate, --grFactor, --scale-list, "
            f"...); in the original's names, {mismatch}"
        )
    return {ours: foreign.weights[theirs] for ours, theirs in names.items()}


def original_optimizer_order(
    model: MultiExitNetwork, foreign: ForeignCheckpoint, names: dict[str, str], groups: int
) -> list[list[str]]:
    """The original's parameter names in the order its optimiser numbered them.

    One group: the model's parameters in module order, which is the file's order. One group
    per exit (the official MSDNet): block n with head n, as our per-exit groups are built.
    """
    parameter_name = {id(p): names[name] for name, p in model.named_parameters()}
    if groups == 1:
        wanted = set(parameter_name.values())
        return [[key for key in foreign.weights if key in wanted]]
    return [[parameter_name[id(p)] for p in stage] for stage in param_groups_by_stage(model)]


def source_momentum(
    model: MultiExitNetwork, foreign: ForeignCheckpoint, names: dict[str, str]
) -> tuple[dict[str, Tensor], dict[str, tuple[float, float]]]:
    """(momentum buffer, (weight decay, momentum)) of every parameter, by original name.

    Raises ValueError saying why the optimiser state cannot be matched to the parameters.
    """
    optimizer = foreign.optimizer or {}
    groups, state = optimizer.get("param_groups"), optimizer.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise ValueError("the file holds no optimiser state")
    order = original_optimizer_order(model, foreign, names, len(groups))
    if [len(group["params"]) for group in groups] != [len(group) for group in order]:
        raise ValueError(
            f"its optimiser's {len(groups)} parameter group(s) do not hold the "
            f"parameters the way the original code groups them"
        )
    buffers, settings = {}, {}
    for group, group_names in zip(groups, order):
        for index, name in zip(group["params"], group_names):
            buffer = state.get(index, {}).get("momentum_buffer")
            if buffer is not None:
                if buffer.shape != foreign.weights[name].shape:
                    raise ValueError(
                        f"its optimiser's parameter {index} has shape "
                        f"{tuple(buffer.shape)}, not that of {name}"
                    )
                buffers[name] = buffer
            settings[name] = (float(group["weight_decay"]), float(group["momentum"]))
    return buffers, settings


def resumable_optimizer(
    model: MultiExitNetwork, job: TrainingJob, foreign: ForeignCheckpoint, names: dict[str, str]
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LRScheduler]:
    """Our optimiser holding the source's momentum buffers and our schedule after its epochs.

    Raises ValueError when the file's optimiser state does not carry over to these flags.
    """
    buffers, settings = source_momentum(model, foreign, names)
    optimizer = build_optimizer(
        model, job.train, job.model.backbone.per_exit_weight_decay, torch.device("cpu")
    )
    parameter_name = {id(p): names[name] for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = parameter_name[id(p)]
            ours = (float(group["weight_decay"]), float(group["momentum"]))
            if not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(ours, settings[name])):
                raise ValueError(
                    f"the source trained {name} with weight decay, momentum "
                    f"{settings[name]} but these flags give {ours} (--weight-decay, "
                    f"--momentum)"
                )
            if name in buffers:
                optimizer.state[p]["momentum_buffer"] = buffers[name].clone()
    scheduler = build_scheduler(optimizer, job.train)
    with warnings.catch_warnings():  # stepping the schedule without optimiser steps is the point
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(foreign.epochs_done):
            scheduler.step()
    return optimizer, scheduler


def check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out: {out} already exists and is not an empty directory; choose a new run directory"
        )


def resumable_state(
    model: MultiExitNetwork, job: TrainingJob, foreign: ForeignCheckpoint, names: dict[str, str]
) -> tuple[str | None, Any, Any]:
    """(why the run cannot be resumed or None, the optimiser, its schedule) carried over from
    the foreign file's SGD state."""
    try:
        if foreign.epochs_done is None:
            raise ValueError("the file does not say how many epochs it trained")
        return (None, *resumable_optimizer(model, job, foreign, names))
    except ValueError as problem:
        return str(problem), None, None
    except (KeyError, TypeError, AttributeError) as problem:
        return f"its optimiser state is not one of SGD ({type(problem).__name__}: {problem})", None, None


def import_note(source: Path, foreign: ForeignCheckpoint, resume_problem: str | None) -> dict[str, Any]:
    """What imported_from.json says: the file, its digest and layout, and whether it resumes."""
    return {
        "source": str(source.resolve()),
        "sha256": file_digest(source),
        "format": foreign.layout,
        "epochs_done": foreign.epochs_done,
        "resumable": resume_problem is None,
        "not_resumable_because": resume_problem,
        **{f"source_{key}": value for key, value in foreign.extras.items()},
    }


def import_run(source: Path, job: TrainingJob) -> dict[str, Any]:
    """Convert `source` into the run directory of `job` (`--out`) for the model it describes;
    returns the note written to imported_from.json. Every check happens before anything is
    written."""
    out = job.run.result_dir
    check_out_dir(out)
    foreign = parse_foreign(read_checkpoint(source, FLAG), source)
    check_backbone(foreign, job.model.arch, source)
    model = job.model.build()
    names = original_names(model)
    model.load_state_dict(mapped_weights(model, foreign, source, names))
    config = job.record
    # The original's held-out images are not in its checkpoint: --use-valid makes our split.
    train_count = len(official_sets(job.data)[0]) if job.train.use_valid else None
    resume_problem, optimizer, scheduler = resumable_state(model, job, foreign, names)
    note = import_note(source, foreign, resume_problem)
    out.mkdir(parents=True, exist_ok=True)
    if train_count is not None:
        load_or_create_split(out, job.data.dataset, job.train.seed, train_count)
    write_config(out, config)
    best = {"model": model.state_dict(), "epoch": foreign.epochs_done or 0, "config": config}
    save_checkpoint({**best, "imported_from": note}, out / BEST_CHECKPOINT)
    if resume_problem is None:
        losses = job.objective.loss(model.num_exits)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        state = training_state(model, optimizer, scheduler, losses, scaler, foreign.epochs_done, config, None)
        save_checkpoint({**state, "imported_from": note}, out / LATEST_CHECKPOINT)
    write_json(out / IMPORT_NOTE, note)
    return note
