"""Which checkpoint of a run the evaluator reads (`--checkpoint best|latest`, or the file
`--evaluate-from` names) and why, so every result says what it was computed from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boostnet.runs.layout import BEST_CHECKPOINT, LATEST_CHECKPOINT
from utils.errors import UserError

CHECKPOINT_FILES = {"best": BEST_CHECKPOINT, "latest": LATEST_CHECKPOINT}
DEFAULT_KIND = "best"
OTHER_FILE = "file"  # a checkpoint file named neither model_best.pth nor model_latest.pth
SHOWN_DIGEST_CHARS = 16  # as many as the cache file names carry


@dataclass(frozen=True)
class EvaluatedCheckpoint:
    """The checkpoint an evaluation read: its file, kind (best, latest or file), the epochs it
    had trained (of how many planned), why it is the one, and the SHA-256 of its bytes."""

    path: Path
    kind: str
    epoch: int | None
    epochs: int | None
    reason: str
    digest: str

    def header(self) -> dict[str, Any]:
        """The entries every result file carries about the checkpoint."""
        return {
            "checkpoint": str(self.path),
            "checkpoint_sha256": self.digest,
            "checkpoint_kind": self.kind,
            "checkpoint_epoch": self.epoch,
            "checkpoint_reason": self.reason,
        }

    def summary(self) -> str:
        """One console line: `evaluating RUN/model_best.pth (best: why, epoch 7 of 8, sha256 ...)`."""
        epoch = (
            ""
            if self.epoch is None
            else f", epoch {self.epoch}" + ("" if self.epochs is None else f" of {self.epochs}")
        )
        return (
            f"evaluating {self.path} ({self.kind}: {self.reason}{epoch}, "
            f"sha256 {self.digest[:SHOWN_DIGEST_CHARS]}...)"
        )


def checkpoint_path(evaluate_from: Path, kind: str | None) -> tuple[Path, Path]:
    """(run directory, checkpoint file) of `--evaluate-from` and the typed `--checkpoint` (None
    when not typed): a file as given, else the run directory's model_best.pth / model_latest.pth."""
    if evaluate_from.is_file():
        if kind is not None:
            raise UserError(
                f"--checkpoint {kind} picks a file of a run directory, but --evaluate-from "
                f"names the file {evaluate_from}; give its directory or drop --checkpoint"
            )
        return evaluate_from.parent, evaluate_from
    if not evaluate_from.is_dir():
        raise UserError(f"--evaluate-from: {evaluate_from} does not exist")
    kind = kind or DEFAULT_KIND
    chosen = evaluate_from / CHECKPOINT_FILES[kind]
    if chosen.is_file():
        return evaluate_from, chosen
    other = next(name for name in CHECKPOINT_FILES if name != kind)
    if (evaluate_from / CHECKPOINT_FILES[other]).is_file():
        raise UserError(
            f"--checkpoint {kind}: {evaluate_from} has no {chosen.name} but has "
            f"{CHECKPOINT_FILES[other]}; pass --checkpoint {other} to evaluate that"
        )
    raise UserError(
        f"--evaluate-from: {evaluate_from} holds no checkpoint ({' or '.join(CHECKPOINT_FILES.values())})"
    )


def file_kind(path: Path) -> str:
    """best or latest by the file's name, else 'file'."""
    return next((kind for kind, name in CHECKPOINT_FILES.items() if path.name == name), OTHER_FILE)


def selection_reason(kind: str, checkpoint: dict[str, Any], config: dict[str, Any]) -> str:
    """Why this checkpoint holds these weights: imported, chosen on validation, or the last epoch
    (training copies every epoch to model_best.pth when it has no validation split)."""
    imported = checkpoint.get("imported_from")
    if isinstance(imported, dict):
        return f"imported by scripts/import_checkpoint.py from {Path(str(imported.get('source'))).name}"
    if kind == "best":
        return (
            "highest validation top-1 of the last exit"
            if config.get("use_valid")
            else "the last epoch, trained without a validation split"
        )
    if kind == "latest":
        return "the last epoch written"
    return "the file --evaluate-from names"


def describe_checkpoint(
    path: Path, checkpoint: dict[str, Any], config: dict[str, Any], digest: str
) -> EvaluatedCheckpoint:
    """What the loaded `checkpoint` (read from `path`, trained with `config`) is. An imported
    file's epoch count is the source's, when it said one; its run planned no number of epochs."""
    kind = file_kind(path)
    imported = checkpoint.get("imported_from")
    if isinstance(imported, dict):
        epoch, epochs = imported.get("epochs_done"), None
    else:
        epoch, epochs = checkpoint.get("epoch"), config.get("epochs")
    return EvaluatedCheckpoint(
        path=path,
        kind=kind,
        epoch=epoch,
        epochs=epochs,
        reason=selection_reason(kind, checkpoint, config),
        digest=digest,
    )
