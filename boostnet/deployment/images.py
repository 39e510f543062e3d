"""Image files for inference: which files the command line names, and how each becomes an input.

Arguments are files, folders (their image files, sorted, not recursive) or glob patterns. Each
image is read as folder datasets read theirs (:func:`boostnet.data.readers.open_image`: 16-bit
grey levels scaled to 8 bits, converted to the policy's colour mode) and put through the data
layer's evaluation transforms (boostnet/data/loaders.py) built from the policy's preprocessing,
so a saved test image gives the tensor evaluation computed for it.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, UnidentifiedImageError
from torch import Tensor

from boostnet.data.loaders import Transform, folder_transforms
from boostnet.data.readers import open_image
from boostnet.evaluation.policy import ExitPolicy
from utils.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def folder_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted; a folder without any is refused."""
    found = sorted(
        path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )
    if not found:
        raise UserError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return found


def image_paths(arguments: Sequence[str]) -> list[Path]:
    """Every file the arguments name, in order; an argument that names no file is refused."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            paths.extend(folder_images(path))
        elif path.exists():
            paths.append(path)
        else:
            matches = sorted(Path(match) for match in glob.glob(argument))
            files = [match for match in matches if match.is_file()]
            if not files:
                what = "only folders" if matches else "no such file, folder or matching files"
                raise UserError(f"{argument}: {what} (a pattern must match image files)")
            paths.extend(files)
    return paths


def image_transform(policy: ExitPolicy) -> Transform:
    """The evaluation transform the policy's preprocessing describes."""
    return folder_transforms(policy.preprocessing.as_dataset(len(policy.classes)), train=False)


def read_image(path: Path, policy: ExitPolicy, transform: Transform) -> tuple[Optional[Tensor], str]:
    """(the network's input for `path`, "") or (None, why it cannot be read)."""
    try:
        return transform(open_image(path, "RGB" if policy.preprocessing.channels == 3 else "L")), ""
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        return None, " ".join(str(error).split()) or type(error).__name__
