"""The exit policy: everything a deployed copy of a run needs to exit early (docs/deployment.md).

Evaluation writes `exit_policy.json` beside its results: for every budget level of the sweep
and for `--budget`, the thresholds with their expected multiply-adds and validation accuracy;
the cumulative per-exit costs; the objective and its factors; the class names; the input
preprocessing; the SHA-256 of the checkpoint the thresholds were fitted for. A reader gets an
:class:`ExitPolicy` back and chooses thresholds from it by level, by budget, or explicitly; a
policy is refused in one line when its digest is not that of the model file used with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from boostnet.data.class_names import class_names
from boostnet.data.datasets import DatasetInfo
from boostnet.data.loaders import EVAL_RESIZE_RATIO
from boostnet.evaluation.loading import LoadedRun
from boostnet.evaluation.tables import mmacs, percent
from utils.errors import UserError
from utils.json_files import json_floats, read_json

POLICY_FILE = "exit_policy.json"
SCHEMA = "boostnet.exit_policy"
SCHEMA_VERSION = (
    2  # 2 added thresholds_of_level: a version 1 flat-curve level could state another level's accuracy
)
READABLE_VERSIONS = (
    1,
    2,
)  # version 1 files still deploy; evaluation keeps no part of them (with_earlier_settings)


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the network's input: colour mode, geometry, normalisation."""

    image_size: int
    resize: str  # "resize": to image_size x image_size; "resize_center_crop": shorter side, then crop
    resize_to: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int

    def as_dataset(self, num_classes: int) -> DatasetInfo:
        """A dataset entry with these facts, for the data layer's evaluation transforms."""
        return DatasetInfo(
            "policy",
            "policy",
            num_classes,
            self.image_size,
            0,
            self.mean,
            self.std,
            False,
            0,
            channels=self.channels,
        )


@dataclass(frozen=True)
class Setting:
    """One threshold setting the protocol offers: its name ("level 7", "budget 1.2e6")."""

    name: str
    thresholds: list[float]
    expected_macs: float
    val_accuracy: float
    val_exit_counts: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExitPolicy:
    """A read exit policy (`document`: the JSON object as stored, copied unchanged by export)."""

    checkpoint_sha256: str
    macs: list[float]
    classes: list[str]
    preprocessing: Preprocessing
    levels: list[Setting]
    budget: Optional[Setting]
    document: dict[str, Any]

    @property
    def num_exits(self) -> int:
        return len(self.macs)


def preprocessing_of(info: DatasetInfo) -> dict[str, Any]:
    """The evaluation-time input pipeline of `info` (boostnet/data/loaders.py) as policy fields."""
    crop = info.imagenet_style
    return {
        "image_size": info.image_size,
        "resize": "resize_center_crop" if crop else "resize",
        "resize_to": round(info.image_size * EVAL_RESIZE_RATIO) if crop else info.image_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "channels": info.channels,
        "color_mode": "RGB" if info.channels == 3 else "L",
    }


def level_entries(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sweep records' policy fields (expected MACs and accuracy measured on validation). Under
    --flat_curve a level reports the accuracy of an earlier, better level (`accuracy_level`); its
    policy entry then deploys that level's thresholds, which reach that accuracy within its
    budget, so that every entry's thresholds, costs and accuracies belong together."""
    by_level = {level["level"]: level for level in levels}
    entries = []
    for level in levels:
        deployed = by_level[level.get("accuracy_level", level["level"])]
        entries.append(
            {
                "level": level["level"],
                "thresholds_of_level": deployed["level"],
                "q": deployed["q"],
                "thresholds": deployed["thresholds"],
                "expected_macs": deployed["val_expected_cost"],
                "val_accuracy": deployed["val_accuracy"],
                "val_exit_counts": deployed["val_exit_counts"],
                "test_accuracy": deployed["test_accuracy"],
                "test_expected_macs": deployed["expected_cost"],
            }
        )
    return entries


def budget_entry(result: dict[str, Any]) -> dict[str, Any]:
    """The `--budget` choice's policy fields."""
    return {
        "budget": result["budget"],
        "q": result["q"],
        "thresholds": result["thresholds"],
        "expected_macs": result["val_expected_cost"],
        "val_accuracy": result["val_accuracy"],
        "val_exit_counts": result["val_exit_counts"],
        "test_accuracy": result["test_accuracy"],
        "test_expected_macs": result["test_expected_cost"],
    }


def build_policy(
    run: LoadedRun, levels: Optional[list[dict[str, Any]]], budget: Optional[dict[str, Any]]
) -> dict[str, Any]:
    """The policy document of `run` from its sweep records and its `--budget` result (either may be None)."""
    job = run.job
    info = job.data.dataset
    factors = run.network.factors
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        **run.header(),
        "num_exits": run.network.num_exits,
        "exit_costs": {"macs": run.costs.macs, "params": run.costs.params},
        "objective": {"name": job.objective.name, "boosted": factors is not None, "factors": factors},
        "confidence": "largest softmax probability of the exit's output; leave when >= the exit's threshold",
        "classes": class_names(info, job.data.root),
        "preprocessing": preprocessing_of(info),
        "levels": level_entries(levels or []),
        "budget": None if budget is None else budget_entry(budget),
    }


def with_earlier_settings(document: dict[str, Any], earlier: Path) -> tuple[dict[str, Any], str]:
    """`document` completed with the `levels` or `budget` it lacks from the policy stored at
    `earlier`, when that one is intact, of this version, and fitted for the same checkpoint file
    and weights: evaluating only a `--budget` must not drop the sweep an earlier evaluation
    fitted, nor the reverse. Returns the document and a note for the console that says what was
    kept or dropped ("" when the stored policy had nothing the new one lacks)."""
    missing = [part for part, empty in (("levels", []), ("budget", None)) if document[part] == empty]
    if not missing or not earlier.is_file():
        return document, ""
    try:
        stored = read_json(earlier)
    except (OSError, ValueError) as error:
        return document, f"(the earlier policy is unreadable, nothing of it kept: {error})"
    held = [part for part in missing if isinstance(stored, dict) and stored.get(part)]
    if not held:
        return document, ""
    why = unfit_reason(stored, document, earlier)
    if why is not None:
        return document, f"(the earlier policy's {' and '.join(held)} dropped: {why})"
    kept = {part: stored[part] for part in held}
    return {**document, **kept}, f"(with the {' and '.join(held)} fitted earlier for this checkpoint)"


def unfit_reason(stored: dict[str, Any], document: dict[str, Any], path: Path) -> Optional[str]:
    """Why parts of the stored policy cannot complete `document`, or None when they can."""
    try:
        parse_policy(stored, path)
    except UserError as error:
        return str(error).split(": ", 1)[-1]
    if stored["version"] != SCHEMA_VERSION:
        return f"version {stored['version']}, older than thresholds_of_level"
    if any(stored.get(key) != document.get(key) for key in ("checkpoint_sha256", "weights")):
        return "fitted for another checkpoint or weights"
    return None


def runless_policy(
    macs: Sequence[float], info: DatasetInfo, budget: Optional[dict[str, Any]] = None
) -> ExitPolicy:
    """The policy of a network no evaluated run stands behind (random weights, for benchmarks and
    tests): its cumulative costs, `info`'s preprocessing and numbered classes, no levels, and the
    `budget` entry if one is given. Its checkpoint digest is "random weights"."""
    document = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "checkpoint_sha256": "random weights",
        "exit_costs": {"macs": list(macs)},
        "classes": [str(label) for label in range(info.num_classes)],
        "preprocessing": preprocessing_of(info),
        "levels": [],
        "budget": budget,
    }
    return parse_policy(document, Path("<no run>"))


def setting(name: str, entry: dict[str, Any], num_exits: int) -> Setting:
    """A stored level or budget entry as a typed setting, refused (ValueError) unless it holds a
    threshold, not NaN, and an exit count for each of the `num_exits` exits."""
    thresholds = json_floats(entry["thresholds"])
    counts = tuple(int(count) for count in entry["val_exit_counts"])
    if len(thresholds) != num_exits or len(counts) != num_exits or any(map(math.isnan, thresholds)):
        raise ValueError(f"{name} needs {num_exits} thresholds (not NaN) and exit counts")
    return Setting(name, thresholds, float(entry["expected_macs"]), float(entry["val_accuracy"]), counts)


def parse_policy(document: Any, path: Path) -> ExitPolicy:
    """The typed policy of a stored document; one-line UserError for another schema or version."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise UserError(f'{path}: not an exit policy (no "schema": "{SCHEMA}")')
    if document.get("version") not in READABLE_VERSIONS:
        raise UserError(
            f"{path}: exit policy version {document.get('version')}; this code reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        prep = document["preprocessing"]
        budget = document["budget"]
        macs = [float(m) for m in document["exit_costs"]["macs"]]
        return ExitPolicy(
            checkpoint_sha256=str(document["checkpoint_sha256"]),
            macs=macs,
            classes=[str(name) for name in document["classes"]],
            preprocessing=Preprocessing(
                int(prep["image_size"]),
                str(prep["resize"]),
                int(prep["resize_to"]),
                tuple(prep["mean"]),
                tuple(prep["std"]),
                int(prep["channels"]),
            ),  # fmt: skip
            levels=[setting(f"level {entry['level']}", entry, len(macs)) for entry in document["levels"]],
            budget=None if budget is None else setting(f"budget {budget['budget']:g}", budget, len(macs)),
            document=document,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: damaged exit policy ({type(error).__name__}: {error})") from None


def read_policy(path: Path) -> ExitPolicy:
    """The exit policy stored at `path`, checked (one-line UserError when unreadable)."""
    try:
        document = read_json(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the exit policy ({error})") from None
    return parse_policy(document, path)


def check_digest(policy: ExitPolicy, policy_file: Path, digest: str, found: str) -> None:
    """Refuse a policy fitted for another checkpoint than the one `digest` identifies (`found`
    says where that digest comes from: "checkpoint runs/r/model_best.pth has", "the export
    exported/r was made from checkpoint")."""
    if policy.checkpoint_sha256 != digest:
        raise UserError(
            f"{policy_file} was fitted for checkpoint sha256 {policy.checkpoint_sha256[:16]}..., but "
            f"{found} sha256 {digest[:16]}...: use the exit policy written with it, or evaluate "
            f"the checkpoint again (--evalmode dynamic or --budget X) to write one"
        )


def setting_for_level(policy: ExitPolicy, level: int, flag: str = "--level") -> Setting:
    """`--level K` (or `flag` K): the sweep's level K."""
    found = [entry for entry in policy.levels if entry.name == f"level {level}"]
    if not found:
        raise UserError(f"{flag} {level}: the exit policy has levels {describe_levels(policy)}")
    return found[0]


def describe_levels(policy: ExitPolicy) -> str:
    """The range of levels the policy holds, for error messages."""
    names = [entry.name.split()[1] for entry in policy.levels]
    return f"{names[0]}..{names[-1]}" if names else "none (evaluate with --evalmode dynamic)"


def describe_setting(setting: Setting) -> str:
    """A setting with what its policy promises: "level 20 (expected 4.21M MACs, validation top-1
    80.83%)"; explicit thresholds promise nothing."""
    if math.isnan(setting.expected_macs):
        return setting.name
    return (
        f"{setting.name} (expected {mmacs(setting.expected_macs)} MACs, "
        f"validation top-1 {percent(setting.val_accuracy)}%)"
    )


def offered_settings(policy: ExitPolicy) -> list[Setting]:
    """Every setting the policy holds: the sweep's levels and the `--budget` choice."""
    return policy.levels + ([policy.budget] if policy.budget is not None else [])


def setting_for_budget(policy: ExitPolicy, budget: float) -> Setting:
    """`--budget MACS`: the most accurate setting on validation whose expected MACs fit `budget`."""
    offered = offered_settings(policy)
    fitting = [entry for entry in offered if entry.expected_macs <= budget]
    if not fitting:
        cheapest = min((entry.expected_macs for entry in offered), default=math.inf)
        raise UserError(
            f"--budget {budget:g}: the cheapest setting of the exit policy costs {mmacs(cheapest)} MACs"
        )
    return max(fitting, key=lambda entry: (entry.val_accuracy, -entry.expected_macs))


def explicit_setting(policy: ExitPolicy, thresholds: Sequence[float]) -> Setting:
    """`--thresholds`: one per exit, or one per exit but the last, which takes every sample still
    running whatever its threshold (so -inf, which argparse would read as a flag, need not be
    typed). Expected MACs and accuracy are unknown: NaN."""
    if len(thresholds) not in (policy.num_exits - 1, policy.num_exits):
        raise UserError(
            f"--thresholds: the network has {policy.num_exits} exits; give {policy.num_exits - 1} or "
            f"{policy.num_exits} values, not {len(thresholds)}"
        )
    if any(map(math.isnan, thresholds)):
        raise UserError("--thresholds: nan is no threshold (a sample leaves when its confidence reaches it)")
    return Setting(
        "explicit thresholds", [*thresholds[: policy.num_exits - 1], -math.inf], math.nan, math.nan
    )
