"""One owner per run directory: created if needed, locked while a training writes to it, and
cleared of temporary files that killed writers left behind."""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, TextIO

from boostnet.runs.records import local_timestamp
from utils.checkpoint import remove_orphaned_temporary_files
from utils.cleanup import outermost_missing, removed_on_failure
from utils.errors import UserError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive POSIX record lock (lockf) on RUN_DIR/.lock, held while this process trains.

    The kernel drops it when the process ends, however it ends (SIGKILL included), so the lock
    of a killed run is simply taken over; the file's text (pid, host, start time) only names
    the holder in a refusal. Record locks are not inherited by forked DataLoader workers and
    reach across hosts on NFS through its lock manager. The file itself stays (deleting it
    would race with the next owner), except in a directory that a failed start created and
    left otherwise empty (:func:`owned_run_dir`), deleted while its lock is held.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.file: Optional[TextIO] = None

    def __enter__(self) -> "RunLock":
        try:
            file = open(self.path, "a+")
        except OSError as error:
            raise UserError(
                f"--result_dir {self.run_dir}: cannot create {self.path} ({error.strerror})"
            ) from None
        try:
            fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip() or "a process that has not written its id yet"
            file.close()
            raise UserError(
                f"--result_dir {self.run_dir} is in use by another training "
                f"({holder}); wait for it to end or choose another --result_dir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()} since {local_timestamp()}\n")
        file.flush()
        self.file = file
        return self

    def __exit__(self, *exc_info) -> None:
        if self.file is not None:
            self.file.close()  # releases the lock
            self.file = None


@contextmanager
def owned_run_dir(run_dir: Path) -> Iterator[None]:
    """Create `run_dir` if needed, hold its lock for the `with` block and first remove the
    temporary files killed writers left. A path that cannot be a run directory is a one-line
    error naming it and the cause. If the block fails before writing anything (bad data, say),
    the folders created here are deleted again, while the lock is still held."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--result_dir {run_dir} is a file, not a directory")
    created = outermost_missing(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--result_dir {run_dir}: cannot create it ({error.strerror})") from None
    with RunLock(run_dir), removed_on_failure(created, spare=lambda path: path.name != LOCK_FILE):
        remove_orphaned_temporary_files(run_dir)
        yield
