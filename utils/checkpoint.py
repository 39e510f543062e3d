"""Checkpoint files: atomic writes, safe loads (weights_only) and the RNG states they carry."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from utils.errors import UserError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
HASH_CHUNK_BYTES = 1 << 20


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the key prefixes DDP and torch.compile add (when every key carries them)."""
    while state_dict:
        prefix = next(
            (prefix for prefix in WRAPPER_PREFIXES if all(key.startswith(prefix) for key in state_dict)), None
        )
        if prefix is None:
            break
        state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (cache keys follow a checkpoint's content, not its name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temporary_path(path: Path) -> Path:
    """Where :func:`write_atomically` writes `path` before the rename: `.NAME.PID.tmp` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(temporary path)` next to `path`, flush it to disk, then rename: readers never
    see half a file. An I/O error (disk full, unwritable folder) is a one-line UserError naming
    the path and its cause; the temporary file is removed and `path` keeps its previous content."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        write(str(temporary))
        fsync(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path}: {error.strerror or error}; its previous version, if any, is unchanged"
        ) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def fsync(path: Path) -> None:
    """Push a written file's data to the disk, so a rename never publishes an empty file."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomically(path: Path, text: str) -> None:
    """Write a small text file (config, split) atomically."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def save_checkpoint(state: dict[str, Any], path: Path, copies: Sequence[Path] = ()) -> None:
    """torch.save `state` to `path` atomically; each of `copies` (model_best.pth) gets the same
    bytes before `path` is renamed into place, so a kill leaves the copy ahead, never behind."""

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:  # a Python file: torch then reports errno (ENOSPC)
            torch.save(state, file)
        for copy in copies:
            copy_atomically(Path(temporary), copy)

    write_atomically(path, write)


def copy_atomically(source: Path, destination: Path) -> None:
    """Copy a finished file to `destination` atomically (e.g. latest -> best checkpoint)."""
    write_atomically(destination, lambda temporary: shutil.copyfile(source, temporary))


def remove_orphaned_temporary_files(folder: Path) -> list[Path]:
    """Delete the `.NAME.PID.tmp` files in `folder` whose writing process no longer runs (it
    was killed mid-write); returns them."""
    orphans = [
        path
        for path in Path(folder).glob(".*.tmp")
        if (pid := writer_pid(path)) is not None and not process_exists(pid)
    ]
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans


def writer_pid(temporary: Path) -> Optional[int]:
    """The process id in a `.NAME.PID.tmp` name, or None for a name not made by this module."""
    pid = temporary.name[: -len(".tmp")].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


NUMPY_SCALAR_DTYPES = ("float64", "float32", "int64", "int32", "bool")
REFUSED_TYPE_PATTERNS = (
    re.compile(r"Unsupported global: GLOBAL (\S+)"),
    re.compile(r"but got <class '([^']+)'>"),
)
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:-1]
TORCH_HEAD_BYTES = 64  # the legacy magic number follows the pickle's protocol (and frame) header
WEIGHTS_ONLY = re.compile(r"weights[_ ]only", re.IGNORECASE)  # PyTorch's lines about the option
WEIGHTS_ONLY_DETAIL = "WeightsUnpickler error:"  # where PyTorch's message gives the real cause


def numpy_scalar_globals() -> list:
    """The NumPy types that optimiser states of the original codebases pickle (scalars such as
    a float64 weight decay): the scalar constructor (under its NumPy 1 and NumPy 2 names),
    `numpy.dtype` and the numeric dtype classes. Nothing that can hold arbitrary objects."""
    scalar = np._core.multiarray.scalar
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        *(type(np.dtype(name)) for name in NUMPY_SCALAR_DTYPES),
    ]


def refused_type(error: pickle.UnpicklingError) -> str | None:
    """The type a weights-only load refused to build, when that is why it failed."""
    for pattern in REFUSED_TYPE_PATTERNS:
        match = pattern.search(str(error))
        if match:
            return match.group(1)
    return None


def read_checkpoint(path: Path, flag: str) -> Any:
    """torch.load on the CPU with weights_only=True, also allowing NumPy scalars; any other
    type is refused (never built, so nothing in the file runs); failures are one-line UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}: no checkpoint at {path}")
    try:
        is_torch = is_torch_file(path)
    except OSError as error:
        raise UserError(f"{flag}: cannot read {path} ({error.strerror})") from None
    if not is_torch:
        raise UserError(
            f"{flag}: {path} is not a readable checkpoint: it is not a PyTorch file "
            f"(torch.save writes a zip archive, or a pickle before PyTorch 1.6)"
        )
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        name = refused_type(error)
        if name is not None:
            raise UserError(
                f"{flag}: {path} holds an object of type {name}, which is not "
                f"loaded (only tensors, plain containers and NumPy scalars are); "
                f"refused without running anything from it"
            ) from None
        raise UserError(unreadable(flag, path, error)) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        zipfile.BadZipFile,
    ) as error:  # what a damaged file makes the unpickler raise
        raise UserError(unreadable(flag, path, error)) from None


def is_torch_file(path: Path) -> bool:
    """Whether the file starts as torch.save writes: a zip archive, or (before PyTorch 1.6) a
    pickle of PyTorch's magic number."""
    with open(path, "rb") as file:
        head = file.read(TORCH_HEAD_BYTES)
    return head.startswith(ZIP_MAGIC) or LEGACY_TORCH_MAGIC in head


def unreadable(flag: str, path: Path, error: BaseException) -> str:
    """One line: the file is damaged, and the first line of why. PyTorch's own lines about
    weights_only are left out: their advice to load with weights_only=False would run code
    from a file nobody can vouch for."""
    lines = (line.strip() for line in str(error).replace(WEIGHTS_ONLY_DETAIL, "\n").splitlines())
    reason = next((line for line in lines if line and not WEIGHTS_ONLY.search(line)), type(error).__name__)
    return f"{flag}: {path} is not a readable checkpoint (corrupt or truncated?): {reason}"


def load_checkpoint(path: Path, flag: str = "--resume") -> dict[str, Any]:
    """A checkpoint of this project (see :func:`read_checkpoint`); anything else: UserError."""
    checkpoint = read_checkpoint(path, flag)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        hint = (
            f"; it looks like one of the original BoostNet code or MSDNet-PyTorch "
            f"('state_dict' entry): convert it with scripts/import_checkpoint.py {path} "
            f"--out RUN_DIR <the run's model flags>"
            if isinstance(checkpoint, dict) and "state_dict" in checkpoint
            else ""
        )
        raise UserError(f"{flag}: {path} is not a BoostNet checkpoint (no 'model' entry){hint}")
    checkpoint["model"] = strip_wrapper_prefixes(checkpoint["model"])
    return checkpoint


def first_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """One line naming the first layer where a checkpoint's weights do not fit the model, if any."""
    for key, tensor in expected.items():
        if key not in found:
            return f"layer {key} {tuple(tensor.shape)} of the model is missing from the checkpoint"
        if found[key].shape != tensor.shape:
            return (
                f"layer {key} has shape {tuple(found[key].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model"
            )
    extra = next((key for key in found if key not in expected), None)
    if extra is not None:
        return f"layer {extra} {tuple(found[extra].shape)} of the checkpoint does not exist in the model"
    return None


def load_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, flag: str, built_from: str
) -> None:
    """Strictly load `state` into `model`, or fail with one line naming the first misfit layer."""
    mismatch = first_mismatch(model.state_dict(), state)
    if mismatch is not None:
        raise UserError(f"{flag}: {path} does not fit the model built from {built_from}: {mismatch}")
    model.load_state_dict(state)


def capture_rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy, torch CPU and CUDA, in weights_only-safe types."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
