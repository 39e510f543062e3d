"""Command-line flags of every program, built from shared flag groups (docs/flags.md).

Each program (training, evaluation, cost counting, checkpoint import) parses only the groups it
uses, so another program's flag is refused in one line. Flag names follow the original
MSDNet / RANet / BoostNet code so recipes carry over, and every flag also takes the other
spelling of its separators (`--lr-milestones` for `--lr_milestones`). Prefixes are not
expanded (`--epoch` is not `--epochs`, but the error suggests it). Every value is checked
before any work starts, in one step per program (:func:`checked`). Nothing is parsed at import
time, and this module imports neither torch nor torchvision (a check that needs them imports
them when it runs), so `--help` is instant.
"""
from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, NamedTuple, NoReturn, Sequence

from boostnet.data.datasets import DATASET_NAMES, FOLDER, FOLDER_FLAGS, DatasetInfo, dataset_info
from utils.errors import UserError
from boostnet.recipes import RECIPES

ARCHS = ("msdnet", "msdnet_ge", "ranet")
SEED_LIMIT = 2 ** 32  # NumPy's seeds
TRAINING_COPIES = 3  # fp32 weights, gradients and momentum: the least a training step holds
SUGGESTION_CUTOFF = 0.75  # difflib similarity from which an unknown flag gets a "did you mean"
DEFAULT_THREADS: int | None = None
"""Default of `--threads`, for every training and evaluation program: None keeps torch's own
intra-op thread count (one per physical core, or what OMP_NUM_THREADS says); an integer here
becomes the default count."""


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (exit status 2), with no prefix
    matching of long flags, a "did you mean" for a near-miss flag, and every default shown in
    --help."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's parse_args, with the unknown arguments reported by :meth:`unrecognized`."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(self.unrecognized(unknown))
        return parsed

    def unrecognized(self, unknown: Sequence[str]) -> str:
        """The error for arguments no flag takes: the closest spelling of this program's flags
        for each unknown one (case-insensitive), else where the flags are listed."""
        spelled = {name.lower(): name for action in self._actions for name in action.option_strings}
        guesses = {}
        for name in (word.split("=", 1)[0] for word in unknown if word.startswith("-")):
            close = difflib.get_close_matches(name.lower(), spelled, n=1, cutoff=SUGGESTION_CUTOFF)
            if close:
                guesses[name] = spelled[close[0]]
        message = f"unrecognized arguments: {' '.join(unknown)}"
        if len(guesses) == 1:
            return f"{message}; did you mean {next(iter(guesses.values()))}?"
        if guesses:
            return f"{message}; did you mean " + ", ".join(
                f"{right} for {wrong}" for wrong, right in guesses.items()) + "?"
        return f"{message} ({self.prog} --help lists the flags)"

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def spellings(names: Sequence[str]) -> list[str]:
    """The names plus, for each long name, its other separator spelling (_ <-> -)."""
    result = list(names)
    for name in names:
        if name.startswith("--"):
            body = name[2:]
            for other in (body.replace("_", "-"), body.replace("-", "_")):
                if "--" + other not in result:
                    result.append("--" + other)
    return result


def flag(group: Any, *names: str, **options: Any) -> None:
    """Add a flag under all its spellings."""
    group.add_argument(*spellings(names), **options)


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
    """Parse '150,225' into [150, 225] ('' is no milestone)."""
    return int_list(text, ",") if text else []


@dataclass(frozen=True)
class EpochFractions:
    """The default of `--lr_milestones`: decay at fixed fractions of `--epochs`, so a short run
    decays too. Milestone i is int(fractions[i] * epochs), rounded down (exact: the fractions
    are rational); one that rounds to 0 or onto the previous one (very short runs) is dropped."""

    fractions: tuple[Fraction, ...]

    def milestones(self, epochs: int) -> list[int]:
        """The milestones of an `epochs`-epoch run: rising, each at least 1."""
        result: list[int] = []
        for fraction in self.fractions:
            epoch = math.floor(fraction * epochs)
            if epoch >= 1 and (not result or epoch > result[-1]):
                result.append(epoch)
        return result

    def __str__(self) -> str:
        """'50%, 75% of --epochs' (a fraction with no whole percentage reads '1/3')."""
        shares = [f"{fraction * 100}%" if (fraction * 100).denominator == 1 else str(fraction)
                  for fraction in self.fractions]
        return f"{', '.join(shares)} of --epochs"


PAPER_CIFAR_SCHEDULE = EpochFractions((Fraction(1, 2), Fraction(3, 4)))  # 150, 225 of 300 epochs


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


# ---------------------------------------------------------------------------------------------
# Flag groups: what each adds, and the checks of its values.

def add_dataset_flags(group: Any) -> None:
    flag(group, "--dataset", "--data", dest="dataset", default="cifar100", choices=DATASET_NAMES,
         help="a dataset of boostnet/data/datasets.py, or 'folder' for your own images in "
              "DATA_ROOT/train and DATA_ROOT/val class folders")
    flag(group, "--num-classes", type=int, default=None, help="--dataset folder: classes")
    flag(group, "--image-size", type=int, default=None,
         help="--dataset folder: side of the square network input; 96 and more use the "
              "ImageNet-style stem and heads")
    flag(group, "--val-size", type=count_or_fraction, default=None,
         help="--dataset folder: training images --use-valid holds out, a count or a fraction "
              "(None: 0.1); a built-in dataset has its own")


def add_loading_flags(group: Any) -> None:
    flag(group, "--data-root", default="data", help="folder holding the dataset")
    flag(group, "--workers", "-j", type=int, default=4, help="data-loading worker processes")
    flag(group, "--eval-batch-size", type=int, default=256, help="batch size of every evaluation")
    flag(group, "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")


def add_thread_flags(group: Any) -> None:
    flag(group, "--threads", type=int, default=DEFAULT_THREADS, metavar="N",
         help="CPU threads of torch's intra-op parallelism (torch.set_num_threads): CPU speed "
              "depends on it several-fold; None: torch's default")


def add_model_flags(group: Any) -> None:
    flag(group, "--arch", default="msdnet_ge", choices=ARCHS,
         help="msdnet, msdnet_ge (MSDNet with gradient rescaling) or ranet")
    flag(group, "--nBlocks", type=int, default=10,
         help="MSDNet: blocks, one exit each; RANet: blocks of the lowest-resolution flow")
    flag(group, "--base", type=int, default=4, help="MSDNet: layers in the first block")
    flag(group, "--step", type=int, default=2,
         help="layers per later block (--stepmode even) or their growth (lin_grow)")
    flag(group, "--stepmode", default="even", choices=("even", "lin_grow"),
         help="even: every later block has --step layers; lin_grow: block i has step*i+1 "
              "(MSDNet) or step*i (RANet) layers")
    flag(group, "--nChannels", type=int, default=16, help="channels of the finest scale's stem")
    flag(group, "--growthRate", type=int, default=6, help="channels each dense layer adds")
    flag(group, "--grFactor", type=int_list, default=None,
         help="per-scale width factors, e.g. 1-2-4 (None: MSDNet 1-2-4, on ImageNet-style inputs "
              "1-2-4-4; RANet 4-2-1-1, on ImageNet-style inputs 4-2-2-1)")
    flag(group, "--bnFactor", type=int_list, default=None,
         help="per-scale bottleneck width factors (None: --grFactor's values)")
    flag(group, "--prune", default="max", choices=("max", "min"),
         help="MSDNet: how scales are dropped along the depth")
    flag(group, "--reduction", type=float, default=0.5, help="channel reduction of the transitions")
    flag(group, "--bottleneck", action=argparse.BooleanOptionalAction, default=True,
         help="1x1 bottleneck before each 3x3 conv")
    flag(group, "--block-step", type=int, default=2, help="RANet: extra blocks per flow")
    flag(group, "--scale-list", type=int_list, default=None,
         help="RANet: resolution level of each flow, lowest first (None: 1-2-3-3, on "
              "ImageNet-style inputs 1-2-3-4)")
    flag(group, "--compress-factor", type=float, default=0.25,
         help="RANet: share of a fusion layer's growth taken from the lower flow")


def add_ensemble_flags(group: Any) -> None:
    flag(group, "--loss", default="boost", choices=("boost", "joint"),
         help="boost: BoostNet's additive ensemble F_n; joint: the original MSDNet/RANet "
              "objective, independent exits f_n")
    flag(group, "--ensemble_reweight", type=float_list, default=[0.5],
         help="prediction reweighting r of F_n = f_n + r_n F_{n-1}: 1 value, 2 (linearly spaced "
              "over the exits) or one per exit (the original code's default is 1.0)")
    flag(group, "--loss_equal", action="store_true",
         help="weight the exit losses by their running averages (docs/method.md)")


def add_training_flags(group: Any) -> None:
    flag(group, "--use-valid", action="store_true",
         help="hold out a validation split of the training set (needed for budgeted evaluation)")
    flag(group, "--epochs", type=int, default=300, help="epochs to train")
    flag(group, "--batch-size", "-b", type=int, default=64, help="batch size per process")
    flag(group, "--lr_f", "--lr", dest="lr_f", type=float, default=0.1, help="initial learning rate")
    flag(group, "--lr_milestones", type=comma_int_list, default=PAPER_CIFAR_SCHEDULE,
         help="epochs after which the learning rate is multiplied by --lr_gamma; by default "
              "fixed fractions of --epochs, rounded down, a repeated or zero milestone dropped "
              "(the paper's 150,225 of 300 epochs on CIFAR-100, 30,60 of 90 on ImageNet; the "
              "original code's default is 100,200)")
    flag(group, "--lr_gamma", type=float, default=0.1, help="learning-rate decay factor")
    flag(group, "--momentum", type=float, default=0.9, help="SGD momentum (no Nesterov)")
    flag(group, "--weight-decay", "--wd", dest="weight_decay", type=float_list, default=[1e-4],
         help="one value, or two linearly spaced over the exits (MSDNet)")
    flag(group, "--seed", type=int, default=0,
         help="seed of the weights, the data order and the validation split")
    flag(group, "--init-from", default=None,
         help="start from the weights of a run directory or checkpoint (e.g. one written by "
              "scripts/import_checkpoint.py) with a fresh optimiser")
    group.set_defaults(default_lr_schedule=None)  # set by resolve_schedule: what the log says


def add_recipe_flag(group: Any) -> None:
    flag(group, "--recipe", default=None, choices=list(RECIPES),
         help="start from a paper recipe's flags (boostnet/recipes.py); typed flags override them")


def add_run_flags(group: Any) -> None:
    add_recipe_flag(group)
    flag(group, "--result_dir", "--save", dest="result_dir", default="runs/default",
         help="run directory: checkpoints, config.json, log.txt, summary.csv, tb/")
    flag(group, "--resume", nargs="?", const=True, default=False, type=resume_mode,
         metavar="auto",
         help="continue the run in --result_dir with its saved flags; 'auto' starts afresh when "
              "it holds no checkpoint yet")
    flag(group, "--checkpoint-interval", type=checkpoint_interval, default=None, metavar="N|Mm",
         help="also save a recovery checkpoint inside the epoch every N steps or M minutes")
    flag(group, "--log-interval", type=int, default=50, help="steps between logged metrics")
    flag(group, "--max-steps-per-epoch", type=int, default=None,
         help="cut every epoch short (smoke tests, timing on a slice)")
    flag(group, "--deterministic", action="store_true",
         help="PyTorch's deterministic algorithms, no cuDNN autotuning")


def add_speed_flags(group: Any) -> None:
    flag(group, "--amp", default=None, choices=("bf16", "fp16"), help="autocast precision")
    flag(group, "--channels-last", action="store_true", help="channels-last memory format")
    flag(group, "--compile", action="store_true",
         help="torch.compile the training step (on one GPU also captured as a CUDA graph)")
    flag(group, "--cuda-graph", action="store_true",
         help="capture the whole training step as one CUDA graph (GPU only)")
    flag(group, "--gpu-data", action=argparse.BooleanOptionalAction, default=None,
         help="keep an in-memory training set on the GPU and augment there (None: on when "
              "training on a GPU)")


def add_evaluation_flags(group: Any) -> None:
    flag(group, "--evaluate-from", default=None, help="run directory or checkpoint to evaluate")
    flag(group, "--checkpoint", default="best", choices=("best", "latest"),
         help="which checkpoint of the --evaluate-from run directory: model_best.pth "
              "(validation-selected, as the original's evaluation) or model_latest.pth")
    flag(group, "--evalmode", default="both", choices=("anytime", "dynamic", "both"),
         help="anytime: every exit; dynamic: budgeted batch; both")
    flag(group, "--flat_curve", action="store_true",
         help="budgeted batch: a level no more accurate on validation than a cheaper one keeps "
              "that one's accuracy (as the original's budgeted scripts evaluate)")
    flag(group, "--budget", type=float, default=None,
         help="multiply-adds per image to meet in budgeted mode, e.g. 40e6")
    flag(group, "--real-exit", action="store_true",
         help="also run real early-exit inference and report images/s")
    flag(group, "--save-logits", default=None, metavar="FILE.npz",
         help="also write every exit's evaluation-time outputs (F_n; f_n with --loss joint), "
              "labels, per-exit costs and sample indices of the test split, and of the "
              "validation split when it is evaluated (docs/evaluation-outputs.md)")


def add_costs_flags(group: Any) -> None:
    add_recipe_flag(group)
    flag(group, "--run-dir", default=None, metavar="RUN_DIR",
         help="take the dataset and model flags from this run directory's config.json (a "
              "training run or an imported checkpoint); typed flags override them")
    flag(group, "--json", action="store_true", help="print JSON instead of a table")


def at_least(minimum: float) -> Callable[[Any], bool]:
    return lambda value: math.isfinite(value) and value >= minimum


def check_ranges(args: argparse.Namespace, parser: OneLineParser,
                 rules: dict[str, tuple[str, Callable[[Any], bool], str]]) -> None:
    """Refuse the first value outside its range: dest -> (flag, rule, what the rule says)."""
    for dest, (name, rule, wanted) in rules.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not values and isinstance(value, list) and dest != "lr_milestones":
            parser.error(f"{name} needs at least one value")
        if not all(rule(v) for v in values):
            parser.error(f"{name} must be {wanted}, got {','.join(f'{v:g}' for v in values)}")


COUNT = (at_least(1), "at least 1")
LOADING_RANGES = {"workers": ("--workers", at_least(0), "at least 0"),
                  "eval_batch_size": ("--eval-batch-size", *COUNT)}
THREAD_RANGES = {"threads": ("--threads", *COUNT)}
MODEL_RANGES = {
    "nBlocks": ("--nBlocks", *COUNT), "step": ("--step", *COUNT),
    "nChannels": ("--nChannels", *COUNT), "growthRate": ("--growthRate", *COUNT),
    "grFactor": ("--grFactor", *COUNT), "bnFactor": ("--bnFactor", *COUNT),
    "block_step": ("--block-step", *COUNT), "scale_list": ("--scale-list", *COUNT),
    "reduction": ("--reduction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    "compress_factor": ("--compress-factor", lambda v: 0 < v < 1, "in (0, 1)")}
ENSEMBLE_RANGES = {"ensemble_reweight": ("--ensemble_reweight", at_least(0), "finite and >= 0")}
TRAINING_RANGES = {
    "epochs": ("--epochs", *COUNT), "batch_size": ("--batch-size", *COUNT),
    "lr_f": ("--lr", lambda v: math.isfinite(v) and v > 0, "finite and > 0"),
    "lr_milestones": ("--lr_milestones", *COUNT),
    "lr_gamma": ("--lr_gamma", lambda v: 0 < v <= 1, "in (0, 1]"),
    "momentum": ("--momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": ("--weight-decay", at_least(0), "finite and >= 0"),
    "seed": ("--seed", lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT})")}
EVALUATION_RANGES = {"budget": ("--budget", lambda v: math.isfinite(v) and v > 0,
                                "a finite number of multiply-adds per image above 0")}
RUN_RANGES = {"log_interval": ("--log-interval", *COUNT),
              "max_steps_per_epoch": ("--max-steps-per-epoch", *COUNT)}


BUILT_IN_VALUES: dict[str, Callable[[DatasetInfo], str]] = {
    "num_classes": lambda info: f"{info.num_classes} classes",
    "image_size": lambda info: f"input size ({info.image_size}x{info.image_size})",
    "val_size": lambda info: f"validation size ({info.held_out(info.train_size):,} images)"}


def check_dataset(args: argparse.Namespace, parser: OneLineParser) -> None:
    """--num-classes/--image-size/--val-size describe a `folder` dataset and nothing else."""
    if args.dataset != FOLDER:
        given = [dest for dest in FOLDER_FLAGS if getattr(args, dest) is not None]
        if given:
            dest = given[0]
            parser.error(f"{FOLDER_FLAGS[dest]} describes --dataset folder; the built-in dataset "
                         f"{args.dataset} has its own {BUILT_IN_VALUES[dest](dataset_info(args))}")
        return
    if args.num_classes is None or args.num_classes < 2:
        parser.error(f"--dataset folder needs --num-classes (at least 2), got {args.num_classes}")
    if args.image_size is None or args.image_size < 8:
        parser.error(f"--dataset folder needs --image-size (at least 8 pixels), got {args.image_size}")
    size = args.val_size
    if size is not None and (isinstance(size, float) and not 0 < size < 1
                             or isinstance(size, int) and size < 1):
        parser.error(f"--val-size must be a count of at least 1 or a fraction in (0, 1), got {size}")


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


def coarsest_size(stem: int, levels: int) -> int:
    """Side of the coarsest map: `stem` through levels-1 stride-2 3x3 convs (padding 1)."""
    for _ in range(levels - 1):
        stem = math.ceil(stem / 2)
    return stem


def check_head_resolution(args: argparse.Namespace, parser: OneLineParser) -> None:
    """The exit heads (two stride-2 convs, a 2x2 pool, a linear layer) need 5x5 to 12x12 maps.

    The coarsest map is the stem's (32 on CIFAR-sized data, 56 on ImageNet) halved, rounding
    up, once per extra scale (MSDNet: len(--grFactor); RANet: the last --scale-list level).
    """
    stem = dataset_info(args).stem_size
    name, levels = (("--scale-list", args.scale_list[-1]) if args.arch == "ranet"
                    else ("--grFactor", len(args.grFactor)))
    size = coarsest_size(stem, levels)
    if not 5 <= size <= 12:
        fitting = [n for n in range(1, 7) if 5 <= coarsest_size(stem, n) <= 12]
        parser.error(f"{name} gives {levels} scale(s), so the exit heads would read {size}x{size} "
                     f"maps on {args.dataset}; they need 5x5 to 12x12: use "
                     f"{' or '.join(map(str, fitting))} scales")


def check_model(args: argparse.Namespace, parser: OneLineParser) -> None:
    """The architecture flags: ranges, one factor per scale, heads that fit the maps."""
    resolve_defaults(args)
    check_ranges(args, parser, MODEL_RANGES)
    if args.arch != "ranet" and args.base < 1:
        parser.error(f"--base must be at least 1, got {args.base}")
    if len(args.bnFactor) != len(args.grFactor):
        parser.error(f"--bnFactor has {len(args.bnFactor)} values but --grFactor has "
                     f"{len(args.grFactor)}; give one per scale")
    if args.arch == "ranet":
        if len(args.scale_list) != len(args.grFactor):
            parser.error(f"--scale-list has {len(args.scale_list)} values but --grFactor has "
                         f"{len(args.grFactor)}; give one per flow")
        if args.scale_list[0] != 1 or any(b - a not in (0, 1) for a, b in
                                          zip(args.scale_list, args.scale_list[1:])):
            parser.error(f"--scale-list must start at 1 and rise by at most 1 per flow, "
                         f"got {'-'.join(map(str, args.scale_list))}")
        fusing = args.grFactor[1:]  # flow 0 has no fusion layers
        if fusing and math.floor(min(fusing) * args.growthRate * args.compress_factor) < 1:
            parser.error(f"--growthRate {args.growthRate} x --grFactor {min(fusing)} x "
                         f"--compress-factor {args.compress_factor} leaves a fusion layer no "
                         f"channels; raise --growthRate or --compress-factor (below 1)")
    check_head_resolution(args, parser)


def check_ensemble(args: argparse.Namespace, parser: OneLineParser) -> None:
    check_ranges(args, parser, ENSEMBLE_RANGES)
    n = num_exits(args)
    if len(args.ensemble_reweight) not in (1, 2, n):
        parser.error(f"--ensemble_reweight has {len(args.ensemble_reweight)} values; "
                     f"give 1, 2 or {n} (the number of exits)")


def resolve_schedule(args: argparse.Namespace) -> None:
    """Turn a default `--lr_milestones` (fractions of --epochs) into epochs, and say so in
    `default_lr_schedule`; typed, recipe and saved milestones are epochs already."""
    if isinstance(args.lr_milestones, EpochFractions):
        args.default_lr_schedule = f"{args.lr_milestones} {args.epochs}"
        args.lr_milestones = args.lr_milestones.milestones(args.epochs)


def check_training(args: argparse.Namespace, parser: OneLineParser) -> None:
    resolve_schedule(args)
    check_ranges(args, parser, TRAINING_RANGES)
    milestones = args.lr_milestones
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        parser.error(f"--lr_milestones must rise, got {','.join(map(str, milestones))}")
    if milestones and milestones[-1] > args.epochs:
        parser.error(f"--lr_milestones {','.join(map(str, milestones))} lie outside the "
                     f"{args.epochs} epochs (the last may be at most --epochs)")
    if len(args.weight_decay) not in (1, 2):
        parser.error(f"--weight-decay takes 1 or 2 values, got {len(args.weight_decay)}")
    if args.arch == "ranet" and len(args.weight_decay) != 1:
        parser.error("--weight-decay: RANet trains with a single weight-decay group; give one value")
    check_memory(args, parser)


def check_run(args: argparse.Namespace, parser: OneLineParser) -> None:
    check_ranges(args, parser, RUN_RANGES)


def check_speed(args: argparse.Namespace, parser: OneLineParser) -> None:
    if args.cuda_graph and args.compile:
        parser.error("--cuda-graph and --compile are alternatives; pick one")


def check_loading(args: argparse.Namespace, parser: OneLineParser) -> None:
    check_ranges(args, parser, LOADING_RANGES)


def check_threads(args: argparse.Namespace, parser: OneLineParser) -> None:
    check_ranges(args, parser, THREAD_RANGES)


def check_evaluation(args: argparse.Namespace, parser: OneLineParser) -> None:
    check_ranges(args, parser, EVALUATION_RANGES)


def no_check(args: argparse.Namespace, parser: OneLineParser) -> None:
    """Groups whose values argparse's types and choices already check."""


def memory_bytes(device: str) -> int:
    """Memory of the device training would use: the GPU's, or the machine's RAM."""
    import torch
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.device(device if ":" in device else "cuda")
                                                ).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(args: argparse.Namespace, parser: OneLineParser) -> None:
    """Refuse a model whose weights, gradients and momentum alone exceed the device's memory."""
    import torch
    from models import build_model
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_model(args).parameters())
    needed, available = parameters * 4 * TRAINING_COPIES, memory_bytes(args.device)
    if needed > available:
        parser.error(f"the model has {parameters:,} parameters: its weights, gradients and "
                     f"momentum alone need {needed / 2**30:.1f} GiB, more than the "
                     f"{available / 2**30:.1f} GiB this device has; shrink --nChannels, "
                     f"--growthRate or --nBlocks")


@dataclass(frozen=True)
class FlagGroup:
    """Flags that belong together, added by `add` and checked by `check`."""

    title: str
    add: Callable[[Any], None]
    check: Callable[[argparse.Namespace, OneLineParser], None] = no_check


DATASET = FlagGroup("dataset", add_dataset_flags, check_dataset)
LOADING = FlagGroup("data loading and device", add_loading_flags, check_loading)
MODEL = FlagGroup("model (docs/architectures.md)", add_model_flags, check_model)
ENSEMBLE = FlagGroup("boosted ensemble (docs/method.md)", add_ensemble_flags, check_ensemble)
TRAINING = FlagGroup("training", add_training_flags, check_training)
RUN = FlagGroup("run directory and recovery (docs/cluster.md)", add_run_flags, check_run)
SPEED = FlagGroup("speed", add_speed_flags, check_speed)
EVALUATION = FlagGroup("evaluation (docs/evaluation.md)", add_evaluation_flags, check_evaluation)
THREADS = FlagGroup("CPU threads (docs/reproducibility.md)", add_thread_flags, check_threads)
COSTS = FlagGroup("where the model flags come from, output", add_costs_flags)
PROGRAMS = {"train": (DATASET, LOADING, THREADS, MODEL, ENSEMBLE, TRAINING, RUN, SPEED),
            "evaluate": (DATASET, LOADING, THREADS, MODEL, ENSEMBLE, EVALUATION),
            "costs": (DATASET, MODEL, COSTS),
            "import": (DATASET, LOADING, MODEL, ENSEMBLE, TRAINING)}
DESCRIPTIONS = {"train": "Train a BoostNet (or joint-loss baseline) multi-exit network.",
                "evaluate": "Evaluate a run: anytime, budgeted batch, real early exit.",
                "costs": "Count per-exit cumulative multiply-adds and parameters.",
                "import": "Import a checkpoint of the original BoostNet code or MSDNet-PyTorch."}


def build_parser(program: str = "train", prog: str | None = None) -> OneLineParser:
    """The parser of `program` (a key of PROGRAMS): its flag groups, nothing else."""
    parser = OneLineParser(prog=prog, description=DESCRIPTIONS[program])
    for group in PROGRAMS[program]:
        group.add(parser.add_argument_group(group.title))
    parser.set_defaults(program=program)
    return parser


def checked(args: argparse.Namespace, parser: OneLineParser) -> argparse.Namespace:
    """`args` with dataset-dependent defaults filled in, after every check of its program."""
    for group in PROGRAMS[args.program]:
        group.check(args, parser)
    return args


def flag_dests(parser: argparse.ArgumentParser) -> set[str]:
    """The destinations of the parser's flags and arguments (not --help's, which holds none)."""
    return {action.dest for action in parser._actions
            if argparse.SUPPRESS not in (action.dest, action.default)}


def parse_typed(parser: argparse.ArgumentParser, argv: Sequence[str]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse `argv` once: (every destination's value, the ones `argv` actually sets)."""
    untyped = object()
    namespace = argparse.Namespace(**dict.fromkeys(flag_dests(parser) | set(parser._defaults),
                                                   untyped))
    parsed = vars(parser.parse_args(argv, namespace))
    typed = {dest: value for dest, value in parsed.items() if value is not untyped}
    return {dest: parser.get_default(dest) for dest in parsed} | typed, typed


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The flags `argv` actually sets (destination -> value), defaults left out."""
    return parse_typed(parser, argv)[1]


def recipe_defaults(parser: argparse.ArgumentParser, typed: dict[str, Any]) -> dict[str, Any]:
    """The flags of the recipe `--recipe` names that `parser` takes (none without one)."""
    name = typed.get("recipe")
    if not name:
        return {}
    flags = explicit_flags(build_parser("train"), RECIPES[name].training_flags)
    return {dest: value for dest, value in flags.items() if dest in flag_dests(parser)}


def run_dir_defaults(parser: OneLineParser, typed: dict[str, Any]) -> dict[str, Any]:
    """The values `parser`'s flags had in the run `--run-dir` names (its config.json), except
    the flags that say where flags come from."""
    if typed.get("run_dir") is None:
        return {}
    from utils.json_files import read_json
    from boostnet.runs.layout import CONFIG_FILE  # imports this module: not at the top
    config_file = Path(typed["run_dir"]) / CONFIG_FILE
    if not config_file.is_file():
        parser.error(f"--run-dir: no {config_file} (give a run directory written by training "
                     f"or scripts/import_checkpoint.py)")
    try:
        config = read_json(config_file)
    except (OSError, ValueError) as error:
        parser.error(f"--run-dir: cannot read {config_file}: {error}")
    own = flag_dests(parser) - {"recipe", "run_dir", "json"}
    return {key: value for key, value in config.items() if key in own}


def parse_costs_args(argv: Sequence[str] | None = None, prog: str | None = None
                     ) -> argparse.Namespace:
    """Parse and check the cost counter's flags: the parser's defaults, overridden by a
    `--recipe`'s or a `--run-dir`'s flags (not both), overridden by the typed flags."""
    parser = build_parser("costs", prog)
    values, typed = parse_typed(parser, list(sys.argv[1:] if argv is None else argv))
    if typed.get("recipe") and typed.get("run_dir") is not None:
        parser.error("--recipe and --run-dir both give the model flags; pick one")
    source = {**recipe_defaults(parser, typed), **run_dir_defaults(parser, typed)}
    return checked(argparse.Namespace(**{**values, **source, **typed}), parser)


class TypedFlags(NamedTuple):
    """A parsed command line: its parser, every flag's value, and the flags it actually typed."""

    parser: OneLineParser
    values: dict[str, Any]
    typed: dict[str, Any]


def parse_evaluation_args(argv: Sequence[str] | None = None, prog: str | None = None,
                          **defaults: Any) -> TypedFlags:
    """Parse the evaluation flags once (`defaults` override the parser's, per entry point);
    the evaluated run's saved flags fill in the untyped ones (boostnet/evaluation/evaluator.py)."""
    parser = build_parser("evaluate", prog)
    parser.set_defaults(**defaults)
    values, typed = parse_typed(parser, list(sys.argv[1:] if argv is None else argv))
    if "evaluate_from" not in typed:
        raise UserError("--evaluate-from is required: give a run directory or a checkpoint file")
    return TypedFlags(parser, values, typed)


# Flags a resumed run may change: where and how fast it runs, and how it logs. --epochs may
# grow when typed; everything else comes from the run's saved flags.
CHANGEABLE_ON_RESUME = ("resume", "result_dir", "data_root", "workers", "eval_batch_size",
                        "device", "threads", "log_interval", "checkpoint_interval",
                        "deterministic", "compile", "cuda_graph", "channels_last", "gpu_data")
NOT_FLAGS = ("program", "num_exits", "provenance")


def resumed_flags(args: argparse.Namespace, typed: dict[str, Any], parser: OneLineParser
                  ) -> argparse.Namespace:
    """The run's saved flags, overridden only by the typed flags that may change on resume;
    any other typed flag that differs is refused, all of them in one line."""
    from boostnet.runs.recovery import newest_checkpoint
    newest = newest_checkpoint(Path(args.result_dir), args.resume)
    if newest is None:
        return args
    path, checkpoint = newest
    saved = {key: value for key, value in checkpoint.get("config", {}).items()
             if hasattr(args, key) and key not in NOT_FLAGS}
    conflicts = [f"{key}={saved[key]!r} (typed {value!r})" for key, value in typed.items()
                 if key in saved and value != saved[key] and key not in CHANGEABLE_ON_RESUME
                 and not (key == "epochs" and value >= saved[key])]
    if conflicts:
        raise UserError(f"--resume continues {path} with the flags it was trained with; these "
                        f"typed flags differ and may not change: {'; '.join(conflicts)}")
    restored = {**vars(args), **saved, **{key: typed[key] for key in typed
                                          if key in CHANGEABLE_ON_RESUME or key == "epochs"}}
    return argparse.Namespace(**restored)


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None,
               **defaults: Any) -> argparse.Namespace:
    """Parse and check the training flags: `defaults` override the parser's (per entry point),
    a `--recipe` overrides those, typed flags override everything; with `--resume` the run's
    saved flags replace all but the few that may change."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser("train", prog)
    parser.set_defaults(**defaults)
    values, typed = parse_typed(parser, argv)
    recipe = recipe_defaults(parser, typed)
    args = argparse.Namespace(**{**values, **recipe, **typed})
    if args.resume:
        args = resumed_flags(args, typed, parser)
    elif ("epochs" in typed and "lr_milestones" not in typed
          and isinstance(args.lr_milestones, list) and args.lr_milestones
          and args.lr_milestones[-1] > args.epochs):  # a recipe's or the program's fixed epochs
        parser.error(f"--epochs {args.epochs} is shorter than the schedule "
                     f"--lr_milestones {','.join(map(str, args.lr_milestones))} of "
                     f"{typed.get('recipe') or parser.prog}; give --lr_milestones too")
    return checked(args, parser)

