"""Write the first test images of a run's dataset as PNG files, to try scripts/predict.py on.

    python scripts/save_test_images.py RUN --count 100 --out pngs
    python scripts/predict.py RUN pngs --level 20

The images are the run's test split as evaluation reads it before its transforms (uint8, with
the dataset's own padding and channel replication), so predict.py computes from these files
exactly the tensors evaluation computed. File NNNNN_<class>.png is test image NNNNN, named after
its true class; labels.csv lists file, label and class. A dataset read from class folders
(`folder`, `imagenet`) has its test images as files already, under DATA_ROOT/val: refused in
one line. See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import OneLineParser, existing_folder, int_at_least, output_new_folder  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

LABELS_FILE = "labels.csv"


def parse_save_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The request; an existing --out is refused before any work, so nothing is overwritten."""
    parser = OneLineParser(prog="save_test_images.py", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=existing_folder, help="run directory (its config.json names the dataset)")
    parser.add_argument("--count", type=int_at_least(1), default=100, help="first test images written")
    parser.add_argument(
        "--out", type=output_new_folder, required=True, help="new folder the PNG files are written to"
    )
    return parser.parse_args(argv)


def file_name(index: int, class_name: str) -> str:
    """NNNNN_<class>.png, the class name reduced to characters every file system takes."""
    return f"{index:05d}_{re.sub(r'[^A-Za-z0-9.-]+', '_', class_name)}.png"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Read the run's dataset, write its first --count test images and labels.csv."""
    request = parse_save_args(argv)
    from PIL import Image
    from tqdm import tqdm

    from args import parse_evaluation_args
    from boostnet.data.class_names import class_names
    from boostnet.data.readers import in_memory_loader
    from boostnet.evaluation.outputs import write_csv
    from utils.cleanup import outermost_missing, removed_on_failure

    job = parse_evaluation_args(["--evaluate-from", str(request.run), "--device", "cpu", "--workers", "0"])
    info, root = job.data.dataset, job.data.root
    load = in_memory_loader(info)
    if load is None:
        raise UserError(
            f"{request.run}: its dataset ({info.name}) is read from class folders; its test images "
            f"are files already, under {Path(root) / 'val'}"
        )
    _, _, images, labels = load(root)
    names = class_names(info, root)
    count = min(request.count, len(labels))
    with removed_on_failure(outermost_missing(request.out)):
        request.out.mkdir(parents=True)
        rows = []
        for index in tqdm(range(count), desc="test images", unit="image", disable=None):
            label = int(labels[index])
            name = file_name(index, names[label])
            pixels = images[index].permute(1, 2, 0).numpy()  # (H, W, 3) uint8: every loader replicates grey
            Image.fromarray(pixels).save(request.out / name)
            rows.append({"file": name, "label": label, "class": names[label]})
        write_csv(request.out / LABELS_FILE, rows)
    print(f"{count} test images of {info.name} written to {request.out} (labels in {LABELS_FILE})")


if __name__ == "__main__":
    run_cli(main)
