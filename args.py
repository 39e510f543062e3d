"""The command line of every program, translated once into typed settings (docs/flags.md).

Each program (training, evaluation, cost counting, checkpoint import) parses only the flag
groups it uses, so another program's flag is refused in one line. The flags are declared as
data (:class:`utils.flags.Flag`) by what they configure: the backbone's by its file under
models/ (added once `--arch` is known), the objective's by models/objectives.py, the rest
here. Flag names follow the original MSDNet / RANet / BoostNet code so recipes carry over;
every flag also takes the other spelling of its separators, prefixes are not expanded (a near
miss gets a "did you mean"), and every value is checked before any work starts.

Values come, weakest first, from the declarations, the program's own defaults, a `--recipe`
(or `op_counter.py --run-dir`), the run being resumed or evaluated, and the command line;
what `--resume` may change is each flag's :class:`~utils.flags.Resume` policy. The result is a
:class:`~boostnet.training.settings.TrainingJob` (or the evaluation, cost or import job): below
this layer nothing reads flags. This module imports neither torch nor torchvision until a
backbone is needed, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from boostnet.data.datasets import (
    DATASET_NAMES,
    FOLDER,
    FOLDER_FLAGS,
    DatasetInfo,
    DataSettings,
    dataset_info,
)
from boostnet.evaluation.settings import EVALMODES, EvalSettings, EvaluationJob
from boostnet.recipes import RECIPES
from boostnet.runs.settings import RunSettings, checkpoint_interval
from boostnet.runtime import Runtime
from boostnet.training.settings import (
    EMA_DECAY,
    OPTIMIZERS,
    SCHEDULES,
    EpochFractions,
    SpeedSettings,
    TrainingJob,
    TrainSettings,
)
from models.objectives import ObjectiveConfig, objective_config, objective_flags
from models.registry import Backbone, ModelSpec, create_model
from utils.cli import OneLineParser, output_folder
from utils.errors import UserError
from utils.flags import (
    COUNT,
    Flag,
    FlagError,
    Kind,
    Range,
    Resume,
    at_least,
    comma_int_list,
    count_or_fraction,
    float_list,
    values_of,
)

DEFAULT_ARCH = "msdnet_ge"
SEED_LIMIT = 2**32  # NumPy's seeds
TRAINING_COPIES = 3  # fp32 weights, gradients and momentum: the least a training step holds
DEFAULT_THREADS: Optional[int] = None
"""Default of `--threads`, for every training and evaluation program: None keeps torch's own
intra-op thread count (one per physical core, or what OMP_NUM_THREADS says), the fastest on an
idle machine by scripts/bench_threads.py (docs/flags.md#cpu-threads); an integer here becomes the
default count."""
PAPER_SCHEDULE = EpochFractions((Fraction(1, 2), Fraction(3, 4)))  # 150, 225 of 300 epochs
NOT_FLAGS = ("program", "num_exits", "provenance", "default_lr_schedule")


# ---------------------------------------------------------------------------------------------
# From declarations to argparse.


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse: its ValueError's reason becomes the error argparse prints."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_flag(group: Any, flag: Flag) -> None:
    """Add `flag` to an argparse group under all its spellings (see utils.flags.spellings)."""
    from utils.flags import spellings

    options: dict[str, Any] = {"help": flag.help, "default": flag.default}
    if flag.names[0].startswith("-"):
        options["dest"] = flag.key
    if flag.kind is Kind.SWITCH:
        options["action"] = "store_true"
    elif flag.kind is Kind.TOGGLE:
        options["action"] = argparse.BooleanOptionalAction
    else:
        options.update(choices=flag.choices, metavar=flag.metavar)
        if flag.parse is not None:
            options["type"] = argument_type(flag.parse)
        if flag.kind is Kind.OPTIONAL:
            options.update(nargs="?", const=flag.const)
        elif flag.kind is Kind.LIST:
            options.update(nargs="*")
    group.add_argument(*spellings(flag.names), **options)


@dataclass(frozen=True)
class FlagGroup:
    """Flags that belong together, and the check of their values together (raising FlagError)."""

    title: str
    flags: tuple[Flag, ...]
    check: Callable[[dict[str, Any]], None] = lambda values: None


def check_ranges(flags: Sequence[Flag], values: dict[str, Any]) -> None:
    """Refuse the first value outside its flag's range (and an empty list where values are due)."""
    for flag in flags:
        value = values.get(flag.key)
        if value is None or flag.range is None:
            continue
        if isinstance(value, list) and not value and flag.key != "lr_milestones":
            raise FlagError(f"{flag.name} needs at least one value")
        refusal = flag.range.refusal(flag.name, value)
        if refusal:
            raise FlagError(refusal)


# ---------------------------------------------------------------------------------------------
# The flag groups of this layer.

BUILT_IN_VALUES: dict[str, Callable[[DatasetInfo], str]] = {
    "num_classes": lambda info: f"{info.num_classes} classes",
    "image_size": lambda info: f"input size ({info.image_size}x{info.image_size})",
    "val_size": lambda info: f"validation size ({info.held_out(info.train_size):,} images)",
}


def check_dataset(values: dict[str, Any]) -> None:
    """--num-classes/--image-size/--val-size describe a `folder` dataset and nothing else."""
    if values["dataset"] != FOLDER:
        given = [key for key in FOLDER_FLAGS if values.get(key) is not None]
        if given:
            key = given[0]
            raise FlagError(
                f"{FOLDER_FLAGS[key]} describes --dataset folder; the built-in "
                f"dataset {values['dataset']} has its own "
                f"{BUILT_IN_VALUES[key](dataset_info(values['dataset']))}"
            )
        return
    if values["num_classes"] is None or values["num_classes"] < 2:
        raise FlagError(f"--dataset folder needs --num-classes (at least 2), got {values['num_classes']}")
    if values["image_size"] is None or values["image_size"] < 8:
        raise FlagError(
            f"--dataset folder needs --image-size (at least 8 pixels), got {values['image_size']}"
        )
    size = values.get("val_size")
    if size is not None and (
        isinstance(size, float) and not 0 < size < 1 or isinstance(size, int) and size < 1
    ):
        raise FlagError(f"--val-size must be a count of at least 1 or a fraction in (0, 1), got {size}")


DATASET = FlagGroup(
    "dataset",
    (
        Flag(
            ("--dataset", "--data"),
            "a dataset of boostnet/data/datasets.py, or 'folder' for your "
            "own images in DATA_ROOT/train and DATA_ROOT/val class folders",
            "cifar100",
            choices=DATASET_NAMES,
            dest="dataset",
        ),
        Flag(("--num-classes",), "--dataset folder: classes", parse=int),
        Flag(
            ("--image-size",),
            "--dataset folder: side of the square network input; 96 and more use "
            "the ImageNet-style stem and heads",
            parse=int,
        ),
        Flag(
            ("--val-size",),
            "--dataset folder: training images --use-valid holds out, a count or a "
            "fraction (None: 0.1); a built-in dataset has its own",
            parse=count_or_fraction,
        ),
    ),
    check_dataset,
)
LOADING = FlagGroup(
    "data loading and device",
    (
        Flag(("--data-root",), "folder holding the dataset", "data", resume=Resume.CHANGE),
        Flag(
            ("--workers", "-j"),
            "data-loading worker processes",
            4,
            int,
            resume=Resume.CHANGE,
            range=Range(lambda v: v >= 0, "at least 0"),
        ),
        Flag(
            ("--eval-batch-size",),
            "batch size of every evaluation",
            256,
            int,
            range=COUNT,
            resume=Resume.CHANGE,
        ),
        Flag(
            ("--device",), "auto (a GPU when there is one), cpu, cuda or cuda:N", "auto", resume=Resume.CHANGE
        ),
    ),
)
THREADS = FlagGroup(
    "CPU threads (docs/reproducibility.md)",
    (
        Flag(
            ("--threads",),
            "CPU threads of torch's intra-op parallelism (torch.set_num_threads): "
            "CPU speed depends on it several-fold; None: torch's default",
            DEFAULT_THREADS,
            int,
            metavar="N",
            range=COUNT,
            resume=Resume.CHANGE,
        ),
    ),
)


def check_training(values: dict[str, Any]) -> None:
    """The schedule rises within the epochs; weight decay has 1 or 2 values."""
    milestones = values["lr_milestones"]
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise FlagError(f"--lr_milestones must rise, got {','.join(map(str, milestones))}")
    if milestones and milestones[-1] > values["epochs"]:
        raise FlagError(
            f"--lr_milestones {','.join(map(str, milestones))} lie outside the "
            f"{values['epochs']} epochs (the last may be at most --epochs)"
        )
    if len(values["weight_decay"]) not in (1, 2):
        raise FlagError(f"--weight-decay takes 1 or 2 values, got {len(values['weight_decay'])}")
    if values["warmup_epochs"] >= values["epochs"]:
        raise FlagError(
            f"--warmup-epochs {values['warmup_epochs']} leaves no epoch of the "
            f"{values['epochs']} --epochs after it; give fewer"
        )


TRAINING = FlagGroup(
    "training",
    (
        Flag(
            ("--use-valid",),
            "hold out a validation split of the training set (needed for budgeted evaluation)",
            False,
            kind=Kind.SWITCH,
        ),
        Flag(("--epochs",), "epochs to train", 300, int, range=COUNT, resume=Resume.GROW),
        Flag(("--batch-size", "-b"), "batch size per process", 64, int, range=COUNT),
        Flag(
            ("--lr", "--lr_f"),
            "initial learning rate",
            0.1,
            float,
            dest="lr_f",
            range=Range(lambda v: math.isfinite(v) and v > 0, "finite and > 0"),
        ),
        Flag(
            ("--lr_milestones",),
            "epochs after which the learning rate is multiplied by --lr_gamma; "
            "by default fixed fractions of --epochs, rounded down, a repeated or zero milestone "
            "dropped (the paper's 150,225 of 300 epochs on CIFAR-100, 30,60 of 90 on ImageNet; the "
            "original code's default is 100,200)",
            PAPER_SCHEDULE,
            comma_int_list,
            range=COUNT,
        ),
        Flag(
            ("--lr_gamma",),
            "learning-rate decay factor",
            0.1,
            float,
            range=Range(lambda v: 0 < v <= 1, "in (0, 1]"),
        ),
        Flag(
            ("--momentum",),
            "SGD momentum (no Nesterov)",
            0.9,
            float,
            range=Range(lambda v: 0 <= v < 1, "in [0, 1)"),
        ),
        Flag(
            ("--weight-decay", "--wd"),
            "one value, or two linearly spaced over the exits (MSDNet)",
            [1e-4],
            float_list,
            dest="weight_decay",
            range=at_least(0),
        ),
        Flag(
            ("--opt",),
            "optimiser over the same weight-decay groups: sgd (with --momentum, the paper's) or "
            "adamw (torch.optim.AdamW, betas 0.9, 0.999, decoupled weight decay)",
            "sgd",
            choices=OPTIMIZERS,
        ),
        Flag(
            ("--sched",),
            "learning-rate schedule, stepped per epoch: multistep (--lr_milestones, --lr_gamma) or "
            "cosine (to 0 at --epochs, after the warm-up)",
            "multistep",
            choices=SCHEDULES,
        ),
        Flag(
            ("--warmup-epochs",),
            "first epochs at a linearly rising lr: epoch e < N trains at lr (e+1)/(N+1)",
            0,
            int,
            metavar="N",
            range=at_least(0),
        ),
        Flag(
            ("--model-ema",),
            "keep an exponential moving average of the weights, updated after every optimiser "
            "step; validation and evaluation use it (docs/fine-tuning.md)",
            False,
            kind=Kind.SWITCH,
        ),
        Flag(
            ("--model-ema-decay",),
            "--model-ema: decay d of ema = d ema + (1 - d) weights",
            EMA_DECAY,
            float,
            metavar="D",
            range=Range(lambda v: 0 < v < 1, "in (0, 1)"),
        ),
        Flag(
            ("--seed",),
            "seed of the weights, the data order and the validation split",
            0,
            int,
            range=Range(lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT})"),
        ),
        Flag(
            ("--init-from",),
            "start from the weights of a run directory or checkpoint (e.g. one "
            "written by scripts/import_checkpoint.py) with a fresh optimiser",
        ),
    ),
    check_training,
)
RECIPE = Flag(
    ("--recipe",),
    "start from a paper recipe's flags (boostnet/recipes.py); typed flags override them",
    choices=tuple(RECIPES),
)
RESULT_DIR = Flag(
    ("--result_dir", "--save"),
    "run directory: checkpoints, config.json, log.txt, summary.csv, tb/",
    "runs/default",
    dest="result_dir",
    resume=Resume.CHANGE,
)
RESUME = Flag(
    ("--resume",),
    "continue the run in --result_dir with its saved flags; 'auto' starts "
    "afresh when it holds no checkpoint yet",
    False,
    lambda text: resume_mode(text),
    kind=Kind.OPTIONAL,
    const=True,
    metavar="auto",
    resume=Resume.CHANGE,
)
RUN = FlagGroup(
    "run directory and recovery (docs/cluster.md)",
    (
        RECIPE,
        RESULT_DIR,
        RESUME,
        Flag(
            ("--checkpoint-interval",),
            "also save a recovery checkpoint inside the epoch every N steps or M minutes",
            parse=checkpoint_interval,
            metavar="N|Mm",
            resume=Resume.CHANGE,
        ),
        Flag(("--log-interval",), "steps between logged metrics", 50, int, range=COUNT, resume=Resume.CHANGE),
        Flag(
            ("--max-steps-per-epoch",),
            "cut every epoch short (smoke tests, timing on a slice)",
            parse=int,
            range=COUNT,
        ),
        Flag(
            ("--deterministic",),
            "PyTorch's deterministic algorithms, no cuDNN autotuning",
            False,
            kind=Kind.SWITCH,
            resume=Resume.CHANGE,
        ),
    ),
)


def resume_mode(text: str) -> str:
    """The optional value of `--resume`: only 'auto' (resume if a checkpoint exists)."""
    if text != "auto":
        raise ValueError(f"the only value it takes is 'auto', got {text!r}")
    return text


def check_speed(values: dict[str, Any]) -> None:
    if values["cuda_graph"] and values["compile"]:
        raise FlagError("--cuda-graph and --compile are alternatives; pick one")


SPEED = FlagGroup(
    "speed",
    (
        Flag(("--amp",), "autocast precision", choices=("bf16", "fp16")),
        Flag(
            ("--channels-last",), "channels-last memory format", False, kind=Kind.SWITCH, resume=Resume.CHANGE
        ),
        Flag(
            ("--compile",),
            "torch.compile the training step (on one GPU also captured as a CUDA graph)",
            False,
            kind=Kind.SWITCH,
            resume=Resume.CHANGE,
        ),
        Flag(
            ("--cuda-graph",),
            "capture the whole training step as one CUDA graph (GPU only)",
            False,
            kind=Kind.SWITCH,
            resume=Resume.CHANGE,
        ),
        Flag(
            ("--gpu-data",),
            "keep an in-memory training set on the GPU and augment there (None: on when training on a GPU)",
            kind=Kind.TOGGLE,
            resume=Resume.CHANGE,
        ),
    ),
    check_speed,
)
EVALUATE_FROM = Flag(("--evaluate-from",), "run directory or checkpoint to evaluate")
CHECKPOINT = Flag(
    ("--checkpoint",),
    "which checkpoint of the --evaluate-from run directory: "
    "model_best.pth (validation-selected, as the original's evaluation) or "
    "model_latest.pth",
    "best",
    choices=("best", "latest"),
)
EVALUATION = FlagGroup(
    "evaluation (docs/evaluation.md)",
    (
        EVALUATE_FROM,
        CHECKPOINT,
        Flag(
            ("--evalmode",), "anytime: every exit; dynamic: budgeted batch; both", "both", choices=EVALMODES
        ),
        Flag(
            ("--flat_curve",),
            "budgeted batch: a level no more accurate on validation than a "
            "cheaper one keeps that one's accuracy (as the original's budgeted scripts evaluate)",
            False,
            kind=Kind.SWITCH,
        ),
        Flag(
            ("--budget",),
            "multiply-adds per image to meet in budgeted mode, e.g. 40e6",
            parse=float,
            range=Range(
                lambda v: math.isfinite(v) and v > 0, "a finite number of multiply-adds per image above 0"
            ),
        ),
        Flag(
            ("--real-exit",),
            "also run real early-exit inference and report images/s",
            False,
            kind=Kind.SWITCH,
        ),
        Flag(
            ("--save-logits",),
            "also write every exit's evaluation-time outputs (F_n; f_n with "
            "--loss joint), labels, per-exit costs and sample indices of the test split, and of the "
            "validation split when it is evaluated (docs/evaluation-outputs.md)",
            metavar="FILE.npz",
        ),
        Flag(
            ("--eval-ema",),
            "evaluate the checkpoint's --model-ema weights (--no-eval-ema: its live weights); "
            "None: the EMA weights when the checkpoint has them (the results' header names which)",
            kind=Kind.TOGGLE,
        ),
    ),
)
COMMAND_LINE_ONLY = tuple(flag.key for flag in EVALUATION.flags)  # never taken from the run
RUN_DIR = Flag(
    ("--run-dir",),
    "take the dataset and model flags from this run directory's "
    "config.json (a training run or an imported checkpoint); typed flags override them",
    metavar="RUN_DIR",
)
COSTS = FlagGroup(
    "where the model flags come from, output",
    (RECIPE, RUN_DIR, Flag(("--json",), "print JSON instead of a table", False, kind=Kind.SWITCH)),
)
IMPORT = FlagGroup(
    "what to import",
    (
        Flag(
            ("source",),
            "checkpoint written by the official BoostNet code or MSDNet-PyTorch",
            parse=Path,
            metavar="SRC",
        ),
        Flag(("--out",), "new run directory to write", parse=output_folder),
    ),
)
ARCH = Flag(
    ("--arch",),
    "the backbone, a name registered under models/ (msdnet, msdnet_ge, "
    "ranet, timm:NAME for a timm model, ...); `--arch NAME --help` adds its flags",
    DEFAULT_ARCH,
)


def objective_group() -> FlagGroup:
    """The objective's flags, declared by models/objectives.py (its registered `--loss` choices)."""
    return FlagGroup("objective (docs/method.md)", objective_flags())


def backbone_group(entry: Backbone) -> FlagGroup:
    """The flags `entry` declares, under a title naming it."""
    return FlagGroup(f"backbone {entry.name}: {entry.description} (docs/architectures.md)", entry.flags)


PROGRAMS: dict[str, tuple[FlagGroup, ...]] = {
    "train": (DATASET, LOADING, THREADS, TRAINING, RUN, SPEED),
    "evaluate": (DATASET, LOADING, THREADS, EVALUATION),
    "costs": (DATASET, COSTS),
    "import": (IMPORT, DATASET, LOADING, TRAINING),
}
WITH_OBJECTIVE = ("train", "evaluate", "import")
DESCRIPTIONS = {
    "train": "Train a BoostNet (or joint-loss baseline) multi-exit network.",
    "evaluate": "Evaluate a run: anytime, budgeted batch, real early exit.",
    "costs": "Count per-exit cumulative multiply-adds and parameters.",
    "import": "Import a checkpoint of the original BoostNet code or MSDNet-PyTorch.",
}


def program_groups(program: str, entry: Optional[Backbone]) -> list[FlagGroup]:
    """The groups `program` parses: its own, the backbone's (when known), the objective's."""
    groups = list(PROGRAMS[program])
    if entry is not None:
        groups.append(backbone_group(entry))
    if program in WITH_OBJECTIVE:
        groups.append(objective_group())
    return groups


def build_parser(
    program: str,
    prog: Optional[str] = None,
    entry: Optional[Backbone] = None,
    defaults: Optional[dict[str, Any]] = None,
) -> OneLineParser:
    """The parser of `program`: `--arch`, its flag groups, the backbone's when `entry` is given."""
    epilog = (
        None
        if entry is not None
        else ("The backbone's own flags (blocks, widths, ...) appear with `--arch NAME --help`.")
    )
    parser = OneLineParser(prog=prog, description=DESCRIPTIONS[program], epilog=epilog)
    add_flag(parser.add_argument_group("backbone"), ARCH)
    for group in program_groups(program, entry):
        argparse_group = parser.add_argument_group(group.title)
        for flag in group.flags:
            add_flag(argparse_group, flag)
    parser.set_defaults(**(defaults or {}))
    return parser


# ---------------------------------------------------------------------------------------------
# Parsing: where the values come from, checked, into typed settings.


def flag_keys(parser: argparse.ArgumentParser) -> set[str]:
    """The destinations of the parser's flags and arguments (not --help's, which holds none)."""
    return {
        action.dest for action in parser._actions if argparse.SUPPRESS not in (action.dest, action.default)
    }


def parse_typed(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse `argv` once: (every destination's value, the ones `argv` actually sets)."""
    untyped = object()
    namespace = argparse.Namespace(**dict.fromkeys(flag_keys(parser) | set(parser._defaults), untyped))
    parsed = vars(parser.parse_args(argv, namespace))
    typed = {dest: value for dest, value in parsed.items() if value is not untyped}
    return {dest: parser.get_default(dest) for dest in parsed} | typed, typed


LOCATORS = {
    "train": (ARCH, RECIPE, RESULT_DIR, RESUME),
    "evaluate": (ARCH, EVALUATE_FROM, CHECKPOINT),
    "costs": (ARCH, RECIPE, RUN_DIR),
    "import": (ARCH,),
}


def located(program: str, argv: Sequence[str]) -> dict[str, Any]:
    """The typed flags that say where the other values come from (`--arch`, `--recipe`,
    `--resume`, `--evaluate-from`, ...), read before the backbone's flags are known."""
    parser = OneLineParser(add_help=False)
    for flag in LOCATORS[program]:
        add_flag(parser, replace(flag, default=None))
    known, _ = parser.parse_known_args([word for word in argv if word not in ("-h", "--help")])
    return {key: value for key, value in vars(known).items() if value is not None}


def backbone_entry(arch: str, parser: OneLineParser) -> Backbone:
    """The registered backbone `arch` names (this imports torch); unknown: one line."""
    from models.registry import backbone

    try:
        return backbone(arch)
    except FlagError as error:
        parser.error(str(error))


def show_help(program: str, prog: Optional[str], argv: Sequence[str], defaults: dict[str, Any]) -> None:
    """With -h/--help: print the program's help (the backbone's flags too when --arch is typed)."""
    if "-h" in argv or "--help" in argv:
        arch = located(program, argv).get("arch")
        plain = build_parser(program, prog, None, defaults)
        entry = backbone_entry(arch, plain) if arch else None
        build_parser(program, prog, entry, defaults).print_help()
        sys.exit(0)


def recipe_flags(name: Optional[str], parser: OneLineParser) -> dict[str, Any]:
    """The flags the recipe `name` sets (none without one), parsed as its own backbone's."""
    if not name:
        return {}
    flags = RECIPES[name].training_flags
    entry = backbone_entry(located("train", flags).get("arch", DEFAULT_ARCH), parser)
    return parse_typed(build_parser("train", entry=entry), flags)[1]


def checked(program: str, parser: OneLineParser, values: dict[str, Any], entry: Backbone) -> dict[str, Any]:
    """`values` after every range and check of the program's groups, in order (one line and
    exit status 2 for the first problem)."""
    try:
        for group in program_groups(program, entry):
            check_ranges(group.flags, values)
            group.check(values)
        if "weight_decay" in values and not entry.per_exit_weight_decay and len(values["weight_decay"]) != 1:
            raise FlagError(
                f"--weight-decay: {entry.description} trains with a single weight-decay group; give one value"
            )
    except FlagError as error:
        parser.error(str(error))
    return values


def model_spec(
    parser: OneLineParser, values: dict[str, Any], entry: Backbone
) -> tuple[ModelSpec, Optional[ObjectiveConfig]]:
    """The backbone's typed config for the dataset's inputs, and the objective's (if any)."""
    inputs = data_info(values).inputs
    try:
        spec = create_model(entry.name, inputs, **values_of(entry.flags, values))
        objective = objective_config(values) if "loss" in values else None
        if objective is not None:
            objective.check(spec.num_exits)
    except FlagError as error:
        parser.error(str(error))
    return spec, objective


def data_info(values: dict[str, Any]) -> DatasetInfo:
    """The dataset `--dataset` (and, for folders, --num-classes/--image-size/--val-size) names."""
    return dataset_info(
        values["dataset"], values.get("num_classes"), values.get("image_size"), values.get("val_size")
    )


def data_settings(values: dict[str, Any]) -> DataSettings:
    return DataSettings(
        data_info(values), Path(values["data_root"]), values["workers"], values["eval_batch_size"]
    )


def runtime(values: dict[str, Any]) -> Runtime:
    return Runtime(values["device"], values.get("threads"))


def record(values: dict[str, Any], program: str, keys: set[str], **extra: Any) -> dict[str, Any]:
    """The flat flag record config.json keeps (the program's flags, JSON-ready)."""
    return {**{key: values[key] for key in sorted(keys)}, "program": program, **extra}


# ---------------------------------------------------------------------------------------------
# Training.


def resolve_schedule(values: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """A default `--lr_milestones` (fractions of --epochs) as epochs, and the note that says so;
    typed, recipe and saved milestones are epochs already."""
    milestones = values["lr_milestones"]
    if not isinstance(milestones, EpochFractions):
        return values, None
    return (
        {**values, "lr_milestones": milestones.milestones(values["epochs"])},
        f"{milestones} {values['epochs']}",
    )


def resumed_config(result_dir: str, resume: Any) -> tuple[Optional[Path], dict[str, Any]]:
    """The checkpoint `--resume` continues and the flags it was trained with (none to resume)."""
    if not resume:
        return None, {}
    from boostnet.runs.recovery import newest_checkpoint  # torch: a checkpoint is read

    newest = newest_checkpoint(Path(result_dir), resume)
    if newest is None:
        return None, {}
    path, checkpoint = newest
    return path, checkpoint.get("config", {})


def resumed(
    values: dict[str, Any], typed: dict[str, Any], saved: dict[str, Any], path: Path, flags: Sequence[Flag]
) -> dict[str, Any]:
    """The run's saved flags, overridden by the typed flags their Resume policy lets change;
    any other typed flag that differs is refused, all of them in one line."""
    policy = {flag.key: flag.resume for flag in flags}
    saved = {key: value for key, value in saved.items() if key in policy}
    kept = {
        key: value
        for key, value in typed.items()
        if policy.get(key) is Resume.CHANGE
        or (policy.get(key) is Resume.GROW and (key not in saved or value >= saved[key]))
    }
    conflicts = [
        f"{key}={saved[key]!r} (typed {value!r})"
        for key, value in typed.items()
        if key in saved and value != saved[key] and key not in kept
    ]
    if conflicts:
        raise UserError(
            f"--resume continues {path} with the flags it was trained with; these "
            f"typed flags differ and may not change: {'; '.join(conflicts)}"
        )
    return {**values, **saved, **kept}


def program_flags(program: str, entry: Backbone) -> list[Flag]:
    """Every flag the program's parser takes, `--arch` included."""
    return [ARCH] + [flag for group in program_groups(program, entry) for flag in group.flags]


def parse_args(
    argv: Optional[Sequence[str]] = None, prog: Optional[str] = None, **defaults: Any
) -> TrainingJob:
    """The training job the command line describes: `defaults` override the declarations (per
    entry point), a `--recipe` overrides those, typed flags override everything; with
    `--resume` the run's saved flags replace all that their policy keeps."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_help("train", prog, argv, defaults)
    where = located("train", argv)
    plain = build_parser("train", prog, None, defaults)
    path, saved = resumed_config(where.get("result_dir", "runs/default"), where.get("resume"))
    recipe = recipe_flags(where.get("recipe"), plain)
    arch = where.get("arch") or saved.get("arch") or recipe.get("arch") or defaults.get("arch", DEFAULT_ARCH)
    entry = backbone_entry(arch, plain)
    parser = build_parser("train", prog, entry, defaults)
    values, typed = parse_typed(parser, argv)
    values = {**values, **{key: value for key, value in recipe.items() if key in values}, **typed}
    if path is not None:
        values = resumed(values, typed, saved, path, program_flags("train", entry))
    elif (
        "epochs" in typed
        and "lr_milestones" not in typed
        and isinstance(values["lr_milestones"], list)
        and values["lr_milestones"]
        and values["lr_milestones"][-1] > values["epochs"]
    ):  # a recipe's fixed schedule
        parser.error(
            f"--epochs {values['epochs']} is shorter than the schedule --lr_milestones "
            f"{','.join(map(str, values['lr_milestones']))} of "
            f"{typed.get('recipe') or parser.prog}; give --lr_milestones too"
        )
    problem = cosine_problem(values, typed, saved if path is not None else None)
    if problem:
        parser.error(problem)
    values, note = resolve_schedule(values)
    return training_job(
        parser, checked("train", parser, values, entry), entry, note or saved.get("default_lr_schedule")
    )


def cosine_problem(
    values: dict[str, Any], typed: dict[str, Any], saved: Optional[dict[str, Any]]
) -> Optional[str]:
    """Why `--sched cosine` cannot go with these flags, if so: a typed step-schedule flag it would
    ignore, or a resume that grows --epochs (the cosine spans the epochs the run started with)."""
    if values["sched"] != "cosine":
        return None
    steps = [
        name
        for name, key in (("--lr_milestones", "lr_milestones"), ("--lr_gamma", "lr_gamma"))
        if key in typed
    ]
    if steps:
        return f"{' and '.join(steps)} shape --sched multistep; --sched cosine has no milestones"
    if saved is not None and values["epochs"] != saved.get("epochs", values["epochs"]):
        return (
            f"--resume with --epochs {values['epochs']}: the cosine of --sched cosine spans the "
            f"{saved['epochs']} epochs the run started with, which may not change"
        )
    return None


TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr_gamma",
    "momentum",
    "seed",
    "use_valid",
    "log_interval",
    "max_steps_per_epoch",
    "deterministic",
    "opt",
    "sched",
    "warmup_epochs",
    "model_ema",
    "model_ema_decay",
)
SPEED_KEYS = ("amp", "channels_last", "compile", "cuda_graph", "gpu_data")


def training_job(
    parser: OneLineParser,
    values: dict[str, Any],
    entry: Backbone,
    schedule_note: Optional[str],
    program: str = "train",
) -> TrainingJob:
    """Checked training values as typed settings (the memory check last: it builds the model)."""
    spec, objective = model_spec(parser, values, entry)
    problem = memory_problem(spec, values["device"])
    if problem:
        parser.error(problem)
    train = TrainSettings(
        **{key: values[key] for key in TRAIN_KEYS if key in values},
        lr=values["lr_f"],
        lr_milestones=tuple(values["lr_milestones"]),
        weight_decay=tuple(values["weight_decay"]),
        init_from=None if values["init_from"] is None else Path(values["init_from"]),
        schedule_note=schedule_note,
    )
    speed = SpeedSettings(**{key: values[key] for key in SPEED_KEYS if key in values})
    run = RunSettings(
        Path(values["result_dir"]), values.get("resume", False), values.get("checkpoint_interval")
    )
    keys = flag_keys(parser) - {"source", "out"}
    return TrainingJob(
        spec,
        objective,
        data_settings(values),
        train,
        run,
        speed,
        runtime(values),
        record(values, program, keys, default_lr_schedule=schedule_note, num_exits=spec.num_exits),
    )


def memory_problem(spec: ModelSpec, device: str) -> Optional[str]:
    """Why a model's weights, gradients and momentum alone would not fit the device, if so."""
    import torch

    with torch.device("meta"):
        parameters = sum(p.numel() for p in spec.build().parameters())
    needed, available = parameters * 4 * TRAINING_COPIES, memory_bytes(device)
    if needed <= available:
        return None
    return (
        f"the model has {parameters:,} parameters: its weights, gradients and momentum alone "
        f"need {needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB this "
        f"device has; shrink the backbone (e.g. --nChannels, --growthRate, --nBlocks)"
    )


def memory_bytes(device: str) -> int:
    """Memory of the device training would use: the GPU's, or the machine's RAM."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(
            torch.device(device if ":" in device else "cuda")
        ).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# ---------------------------------------------------------------------------------------------
# Evaluation, costs, import.


def evaluated_run_config(run_dir: Path, checkpoint_file: Path) -> dict[str, Any]:
    """The training flags of the evaluated run: its config.json, else the copy in the checkpoint."""
    from boostnet.runs.layout import CONFIG_FILE
    from utils.json_files import read_json

    config_file = run_dir / CONFIG_FILE
    if config_file.is_file():
        try:
            return read_json(config_file)
        except (OSError, ValueError) as error:
            raise UserError(f"--evaluate-from: cannot read {config_file}: {error}") from None
    from utils.checkpoint import load_checkpoint  # torch: the checkpoint carries the flags

    checkpoint = load_checkpoint(checkpoint_file, flag="--evaluate-from")
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("config"), dict):
        return checkpoint["config"]
    raise UserError(f"--evaluate-from: {run_dir} has no {CONFIG_FILE} and the checkpoint carries no config")


def refuse_unknown_flags(
    program: str, prog: Optional[str], argv: Sequence[str], defaults: dict[str, Any]
) -> None:
    """One line for a flag that neither `program` nor any registered backbone takes (or a value
    none of them can parse), before the backbone is known from the files it reads."""
    from models.registry import backbone, backbone_names

    parser = build_parser(program, prog, None, defaults)
    keys = flag_keys(parser)
    group = parser.add_argument_group("backbones")
    for name in backbone_names():
        for flag in backbone(name).flags:
            if flag.key not in keys:
                keys.add(flag.key)
                add_flag(group, flag)
    parser.parse_args(argv)


def parse_evaluation_args(
    argv: Optional[Sequence[str]] = None, prog: Optional[str] = None, **defaults: Any
) -> EvaluationJob:
    """The evaluation the command line asks for: the evaluated run's saved flags fill in every
    flag not typed (except the evaluation's own)."""
    from boostnet.evaluation.checkpoint_choice import checkpoint_path

    argv = list(sys.argv[1:] if argv is None else argv)
    show_help("evaluate", prog, argv, defaults)
    refuse_unknown_flags("evaluate", prog, argv, defaults)  # before the run is read
    where = located("evaluate", argv)
    if "evaluate_from" not in where:
        raise UserError("--evaluate-from is required: give a run directory or a checkpoint file")
    run_dir, checkpoint_file = checkpoint_path(Path(where["evaluate_from"]), where.get("checkpoint"))
    config = evaluated_run_config(run_dir, checkpoint_file)
    plain = build_parser("evaluate", prog, None, defaults)
    entry = backbone_entry(where.get("arch") or config.get("arch", DEFAULT_ARCH), plain)
    parser = build_parser("evaluate", prog, entry, defaults)
    values, typed = parse_typed(parser, argv)
    saved = {
        key: value
        for key, value in config.items()
        if key in values and key not in typed and key not in COMMAND_LINE_ONLY
    }
    values = checked("evaluate", parser, {**values, **saved, **typed}, entry)
    spec, objective = model_spec(parser, values, entry)
    evaluation = EvalSettings(
        checkpoint=values["checkpoint"],
        evalmode=values["evalmode"],
        flat_curve=values["flat_curve"],
        budget=values["budget"],
        real_exit=values["real_exit"],
        save_logits=None if values["save_logits"] is None else Path(values["save_logits"]),
        ema=values["eval_ema"],
    )
    return EvaluationJob(
        run_dir, checkpoint_file, spec, objective, data_settings(values), evaluation, runtime(values), config
    )


@dataclass(frozen=True)
class CostsRequest:
    """What op_counter.py counts, and whether it prints JSON."""

    model: ModelSpec
    json: bool


def run_dir_flags(parser: OneLineParser, run_dir: Optional[str]) -> dict[str, Any]:
    """The flags of the run `--run-dir` names (its config.json), none without one."""
    if run_dir is None:
        return {}
    from boostnet.runs.layout import CONFIG_FILE
    from utils.json_files import read_json

    config_file = Path(run_dir) / CONFIG_FILE
    if not config_file.is_file():
        parser.error(
            f"--run-dir: no {config_file} (give a run directory written by training "
            f"or scripts/import_checkpoint.py)"
        )
    try:
        return read_json(config_file)
    except (OSError, ValueError) as error:
        parser.error(f"--run-dir: cannot read {config_file}: {error}")


def parse_costs_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> CostsRequest:
    """The model to count: the declarations, overridden by a `--recipe`'s or a `--run-dir`'s
    flags (not both), overridden by the typed flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_help("costs", prog, argv, {})
    where = located("costs", argv)
    plain = build_parser("costs", prog)
    if where.get("recipe") and where.get("run_dir") is not None:
        plain.error("--recipe and --run-dir both give the model flags; pick one")
    source = {**recipe_flags(where.get("recipe"), plain), **run_dir_flags(plain, where.get("run_dir"))}
    entry = backbone_entry(where.get("arch") or source.get("arch", DEFAULT_ARCH), plain)
    parser = build_parser("costs", prog, entry)
    values, typed = parse_typed(parser, argv)
    own = {
        key: value
        for key, value in source.items()
        if key in values and key not in ("recipe", "run_dir", "json")
    }
    values = checked("costs", parser, {**values, **own, **typed}, entry)
    return CostsRequest(model_spec(parser, values, entry)[0], values["json"])


def parse_import_args(
    argv: Optional[Sequence[str]] = None, prog: Optional[str] = None
) -> tuple[Path, TrainingJob]:
    """The checkpoint to import and the run it becomes (its --out directory, flags as typed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_help("import", prog, argv, {})
    plain = build_parser("import", prog)
    entry = backbone_entry(located("import", argv).get("arch", DEFAULT_ARCH), plain)
    parser = build_parser("import", prog, entry)
    values, _ = parse_typed(parser, argv)
    if values["out"] is None:
        parser.error("--out is required: the new run directory to write")
    values, note = resolve_schedule({**values, "result_dir": str(values["out"])})
    return values["source"], training_job(
        parser, checked("import", parser, values, entry), entry, note, program="import"
    )
