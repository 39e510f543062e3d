"""Folders a step creates are deleted again when the step fails, so a failed start (a download
that found no internet, a training refused before its first epoch) leaves nothing behind."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional


def outermost_missing(folder: Path) -> Optional[Path]:
    """The outermost folder of `folder`'s path that does not exist yet (None when all do):
    what creating `folder` with its parents creates."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    return missing[-1] if missing else None


def spare_nothing(path: Path) -> bool:
    """The default of :func:`removed_on_failure`: everything a failed step made is junk."""
    return False


@contextmanager
def removed_on_failure(
    created: Optional[Path], spare: Callable[[Path], bool] = spare_nothing
) -> Iterator[None]:
    """Run the block; if it raises, delete the folder `created` (from :func:`outermost_missing`,
    taken before the block made it) with all it holds, unless it holds a file `spare` keeps."""
    try:
        yield
    except BaseException:
        if (
            created is not None
            and created.is_dir()
            and not any(spare(path) for path in created.rglob("*") if path.is_file())
        ):
            shutil.rmtree(created, ignore_errors=True)
        raise
