"""Command-line flags for training, evaluation and cost counting.

Flag names follow the original MSDNet / RANet / BoostNet code so recipes carry over.
Nothing is parsed at import time: call :func:`parse_args`.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, NoReturn, Sequence

from utils.datasets import DATASET_NAMES, FOLDER, FOLDER_FLAGS, dataset_info
from utils.recipes import RECIPES

ARCHS = ("msdnet", "msdnet_ge", "ranet")


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def int_list(text: str, sep: str = "-") -> list[int]:
    """Parse '1-2-4' into [1, 2, 4]."""
    try:
        return [int(v) for v in text.split(sep)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by '{sep}', got {text!r}")


def float_list(text: str) -> list[float]:
    """Parse '0.5' or '0.5,1.0' into a list of floats."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by ',', got {text!r}")


def count_or_fraction(text: str) -> int | float:
    """Parse '5000' as a count or '0.1' as a fraction."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}")


def comma_int_list(text: str) -> list[int]:
    return int_list(text, ",") if text else []


def resume_mode(text: str) -> str:
    """The optional value of `--resume`: only 'auto' (resume if a checkpoint exists)."""
    if text != "auto":
        raise argparse.ArgumentTypeError(f"the only value it takes is 'auto', got {text!r}")
    return text


def interval_parts(text: str) -> tuple[int | None, float | None]:
    """`--checkpoint-interval` as (steps, seconds): '500' is 500 steps, '30m' is 30 minutes."""
    try:
        if text.endswith("m"):
            steps, seconds = None, float(text[:-1]) * 60
        else:
            steps, seconds = int(text), None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of steps (500) or minutes (30m), got {text!r}") from None
    amount = steps if steps is not None else seconds
    if not (math.isfinite(amount) and amount > 0):
        raise argparse.ArgumentTypeError(f"the interval must be positive, got {text!r}")
    return steps, seconds


def checkpoint_interval(text: str) -> str:
    """Validate `--checkpoint-interval` and keep it as typed (config.json stays readable)."""
    interval_parts(text)
    return text


def build_parser(prog: str | None = None) -> OneLineParser:
    p = OneLineParser(prog=prog, description="BoostNet: boosted dynamic neural networks")

    d = p.add_argument_group("data")
    d.add_argument("--dataset", "--data", dest="dataset", default="cifar100", choices=DATASET_NAMES,
                   help="a dataset of utils/datasets.py, or 'folder' for your own images in "
                        "DATA_ROOT/train and DATA_ROOT/val class folders (default: %(default)s)")
    d.add_argument("--data-root", default="data", help="folder holding the dataset")
    d.add_argument("--num-classes", type=int, default=None, help="--dataset folder: classes")
    d.add_argument("--image-size", type=int, default=None,
                   help="--dataset folder: side of the square network input; 96 and more use "
                        "the ImageNet-style stem and heads")
    d.add_argument("--val-size", type=count_or_fraction, default=None,
                   help="--dataset folder: training images --use-valid holds out, a count or a "
                        "fraction (default 0.1)")
    d.add_argument("--use-valid", action="store_true",
                   help="hold out a validation split (needed for budgeted evaluation)")
    d.add_argument("--workers", "-j", type=int, default=4)

    m = p.add_argument_group("model")
    m.add_argument("--arch", default="msdnet_ge", choices=ARCHS)
    m.add_argument("--nBlocks", type=int, default=10)
    m.add_argument("--base", type=int, default=4, help="layers in the first MSDNet block")
    m.add_argument("--step", type=int, default=2)
    m.add_argument("--stepmode", default="even", choices=("even", "lin_grow"))
    m.add_argument("--nChannels", type=int, default=16)
    m.add_argument("--growthRate", type=int, default=6)
    m.add_argument("--grFactor", type=int_list, default=None,
                   help="per-scale width factors, e.g. 1-2-4 (default: MSDNet 1-2-4, on ImageNet "
                        "1-2-4-4; RANet 4-2-1-1, on ImageNet 4-2-2-1)")
    m.add_argument("--bnFactor", type=int_list, default=None,
                   help="per-scale bottleneck factors (default: same as --grFactor's default)")
    m.add_argument("--prune", default="max", choices=("max", "min"))
    m.add_argument("--reduction", type=float, default=0.5)
    m.add_argument("--bottleneck", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--block-step", type=int, default=2, help="RANet: extra blocks per flow")
    m.add_argument("--scale-list", type=int_list, default=None,
                   help="RANet: resolution level of each flow (default 1-2-3-3, on ImageNet 1-2-3-4)")
    m.add_argument("--compress-factor", type=float, default=0.25)

    o = p.add_argument_group("objective and optimisation")
    o.add_argument("--loss", default="boost", choices=("boost", "joint"),
                   help="boost: BoostNet additive objective; joint: the original MSDNet/RANet one")
    o.add_argument("--ensemble_reweight", type=float_list, default=[0.5],
                   help="prediction reweighting r: 1, 2 (linearly spaced) or N values")
    o.add_argument("--loss_equal", action="store_true", help="equalise stage losses by their EMA")
    o.add_argument("--epochs", type=int, default=300)
    o.add_argument("--batch-size", "-b", type=int, default=64, help="per-process batch size")
    o.add_argument("--lr_f", "--lr", dest="lr_f", type=float, default=0.1)
    o.add_argument("--lr_milestones", type=comma_int_list, default=[150, 225])
    o.add_argument("--lr_gamma", type=float, default=0.1)
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float_list, default=[1e-4],
                   help="one value, or two linearly spaced over the exits (MSDNet)")
    o.add_argument("--seed", type=int, default=0)

    r = p.add_argument_group("run")
    r.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="start from a paper recipe's flags (utils/recipes.py); flags given here "
                        "override them")
    r.add_argument("--result_dir", "--save", dest="result_dir", default="runs/default")
    r.add_argument("--resume", nargs="?", const=True, default=False, type=resume_mode,
                   metavar="auto",
                   help="continue from the newest checkpoint in RESULT_DIR (mid-epoch recovery "
                        "or model_latest.pth); '--resume auto' starts afresh when there is none")
    r.add_argument("--checkpoint-interval", type=checkpoint_interval, default=None,
                   metavar="N|Mm",
                   help="also save a recovery checkpoint inside the epoch every N steps or M "
                        "minutes (e.g. 500, 30m)")
    r.add_argument("--deterministic", action="store_true",
                   help="PyTorch's deterministic algorithms, no cuDNN autotuning")
    r.add_argument("--init-from", default=None,
                   help="start from the weights of a run directory or checkpoint (e.g. one written "
                        "by scripts/import_checkpoint.py) with a fresh optimiser; with --resume "
                        "the run's own latest weights are used instead")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--amp", default=None, choices=("bf16", "fp16"), help="autocast precision")
    r.add_argument("--channels-last", action="store_true")
    r.add_argument("--compile", action="store_true", help="torch.compile the training step")
    r.add_argument("--cuda-graph", action="store_true",
                   help="capture the whole training step as one CUDA graph (GPU only)")
    r.add_argument("--gpu-data", action=argparse.BooleanOptionalAction, default=None,
                   help="keep a CIFAR-sized training set on the GPU and augment there "
                        "(default: on when training on a GPU)")
    r.add_argument("--log-interval", type=int, default=50, help="steps between logged metrics")
    r.add_argument("--max-steps-per-epoch", type=int, default=None,
                   help="cut every epoch short (smoke tests, timing on a slice)")
    r.add_argument("--eval-batch-size", type=int, default=256)

    e = p.add_argument_group("evaluation")
    e.add_argument("--evaluate-from", default=None, help="run directory or checkpoint to evaluate")
    e.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                   help="which checkpoint of the --evaluate-from run directory: model_best.pth "
                        "(validation-selected, as the original's evaluation) or model_latest.pth "
                        "(default: %(default)s)")
    e.add_argument("--evalmode", default="both", choices=("anytime", "dynamic", "both"))
    e.add_argument("--flat_curve", action="store_true")
    e.add_argument("--budget", type=float, default=None,
                   help="multiply-adds per image to meet in budgeted mode, e.g. 40e6")
    e.add_argument("--real-exit", action="store_true",
                   help="also run real early-exit inference and report images/s")
    e.add_argument("--save-logits", default=None, metavar="FILE.npz",
                   help="also write every exit's evaluation-time outputs (F_n; f_n with --loss joint), "
                        "labels, per-exit costs and sample indices of the test split, and of the "
                        "validation split when it is evaluated, to this NumPy archive "
                        "(docs/evaluation-outputs.md)")
    return p


DEFAULT_GR_FACTOR = {("msdnet", False): [1, 2, 4], ("msdnet", True): [1, 2, 4, 4],
                     ("ranet", False): [4, 2, 1, 1], ("ranet", True): [4, 2, 2, 1]}
DEFAULT_SCALE_LIST = {False: [1, 2, 3, 3], True: [1, 2, 3, 4]}


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill architecture- and dataset-dependent defaults (width factors, RANet's scale list).

    ImageNet's stem leaves 56x56 maps, so its defaults have one scale more than CIFAR's (the
    exit heads need 7x7 at the coarsest scale); they are the ImageNet recipes' values. Every
    dataset with ImageNet-style inputs gets these.
    """
    imagenet = dataset_info(args).imagenet_style
    family = "ranet" if args.arch == "ranet" else "msdnet"
    if args.grFactor is None:
        args.grFactor = list(DEFAULT_GR_FACTOR[family, imagenet])
    if args.bnFactor is None:
        args.bnFactor = list(args.grFactor)
    if args.arch == "ranet" and args.scale_list is None:
        args.scale_list = list(DEFAULT_SCALE_LIST[imagenet])
    return args


def num_exits(args: argparse.Namespace) -> int:
    """Number of exits the configured network has."""
    if args.arch == "ranet":
        return args.nBlocks + args.block_step * (len(args.scale_list) - 1)
    return args.nBlocks


def check_head_resolution(args: argparse.Namespace, parser: OneLineParser) -> None:
    """The exit heads (two stride-2 convs, a 2x2 pool, a linear layer) need 5x5 to 12x12 maps.

    The coarsest map is the stem's (32 on CIFAR-sized data, 56 on ImageNet) halved, rounding
    up, once per extra scale (MSDNet: len(--grFactor); RANet: the last --scale-list level).
    """
    stem = dataset_info(args).stem_size
    flag, levels = (("--scale-list", args.scale_list[-1]) if args.arch == "ranet"
                    else ("--grFactor", len(args.grFactor)))
    size = coarsest_size(stem, levels)
    if not 5 <= size <= 12:
        fitting = [n for n in range(1, 7) if 5 <= coarsest_size(stem, n) <= 12]
        parser.error(f"{flag} gives {levels} scale(s), so the exit heads would read {size}x{size} "
                     f"maps on {args.dataset}; they need 5x5 to 12x12: use "
                     f"{' or '.join(map(str, fitting))} scales")


def coarsest_size(stem: int, levels: int) -> int:
    """Side of the coarsest map: `stem` through levels-1 stride-2 3x3 convs (padding 1)."""
    for _ in range(levels - 1):
        stem = math.ceil(stem / 2)
    return stem


def validate(args: argparse.Namespace, parser: OneLineParser) -> None:
    """Reject inconsistent flag combinations with one line naming the flag."""
    positive = {"--nBlocks": args.nBlocks, "--step": args.step, "--nChannels": args.nChannels,
                "--growthRate": args.growthRate, "--epochs": args.epochs,
                "--batch-size": args.batch_size}
    if args.arch != "ranet":
        positive["--base"] = args.base
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if len(args.bnFactor) != len(args.grFactor):
        parser.error(f"--bnFactor has {len(args.bnFactor)} values but --grFactor has "
                     f"{len(args.grFactor)}; give one per scale")
    if args.arch == "ranet":
        if args.block_step < 1:
            parser.error(f"--block-step must be at least 1, got {args.block_step}")
        if len(args.scale_list) != len(args.grFactor):
            parser.error(f"--scale-list has {len(args.scale_list)} values but --grFactor has "
                         f"{len(args.grFactor)}; give one per flow")
        if args.scale_list[0] != 1 or any(b - a not in (0, 1) for a, b in
                                          zip(args.scale_list, args.scale_list[1:])):
            parser.error(f"--scale-list must start at 1 and rise by at most 1 per flow, "
                         f"got {'-'.join(map(str, args.scale_list))}")
        fusing = args.grFactor[1:]  # flow 0 has no fusion layers
        if fusing and (math.floor(min(fusing) * args.growthRate * args.compress_factor) < 1
                       or args.compress_factor >= 1):
            parser.error(f"--growthRate {args.growthRate} x --grFactor {min(fusing)} x "
                         f"--compress-factor {args.compress_factor} leaves a fusion layer no "
                         f"channels; raise --growthRate or --compress-factor (below 1)")
    check_head_resolution(args, parser)
    if not 0 <= args.reduction <= 1:
        parser.error(f"--reduction must be in [0, 1], got {args.reduction}")
    n = num_exits(args)
    if len(args.ensemble_reweight) not in (1, 2, n):
        parser.error(f"--ensemble_reweight has {len(args.ensemble_reweight)} values; "
                     f"give 1, 2 or {n} (the number of exits)")
    if len(args.weight_decay) not in (1, 2):
        parser.error(f"--weight-decay takes 1 or 2 values, got {len(args.weight_decay)}")
    if args.cuda_graph and args.compile:
        parser.error("--cuda-graph and --compile are alternatives; pick one")


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The flags `argv` actually sets (destination -> value), defaults left out."""
    untyped = object()
    namespace = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), untyped))
    parsed = vars(parser.parse_args(argv, namespace))
    return {dest: value for dest, value in parsed.items() if value is not untyped}


def recipe_defaults(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The flags of the recipe `--recipe` names in `argv` (none without one)."""
    name = explicit_flags(parser, argv).get("recipe")
    return explicit_flags(parser, RECIPES[name].training_flags) if name else {}


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None,
               **defaults) -> argparse.Namespace:
    """Parse and validate flags; `defaults` override the parser's defaults (per entry point),
    a `--recipe` overrides those, and flags on the command line override everything."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    parser.set_defaults(**defaults)
    parser.set_defaults(**recipe_defaults(parser, argv))
    return checked(parser.parse_args(argv), parser)


def checked(args: argparse.Namespace, parser: OneLineParser) -> argparse.Namespace:
    """`args` with dataset-dependent defaults filled in, after every check has passed."""
    check_dataset_flags(args, parser)
    args = resolve_defaults(args)
    validate(args, parser)
    return args


def check_dataset_flags(args: argparse.Namespace, parser: OneLineParser) -> None:
    """--num-classes/--image-size/--val-size describe a `folder` dataset and nothing else."""
    if args.dataset != FOLDER:
        given = [flag for dest, flag in FOLDER_FLAGS.items() if getattr(args, dest) is not None]
        if given:
            parser.error(f"{given[0]} describes --dataset folder; {args.dataset} has its own "
                         f"({dataset_info(args).num_classes} classes, "
                         f"{dataset_info(args).image_size}x{dataset_info(args).image_size} inputs)")
        return
    if args.num_classes is None or args.num_classes < 2:
        parser.error(f"--dataset folder needs --num-classes (at least 2), got {args.num_classes}")
    if args.image_size is None or args.image_size < 8:
        parser.error(f"--dataset folder needs --image-size (at least 8 pixels), got {args.image_size}")
    size = args.val_size
    if size is not None and (isinstance(size, float) and not 0 < size < 1
                             or isinstance(size, int) and size < 1):
        parser.error(f"--val-size must be a count of at least 1 or a fraction in (0, 1), got {size}")


if __name__ == "__main__":
    print(vars(parse_args()))
