"""Leaving the lab (docs/deployment.md): evaluation writes the exit policy, exported stages
reproduce the network, predict.py on image files exits where the simulated protocol does, and
bad inputs are one line each with nothing overwritten.

One tiny boosted MSDNet is briefly trained on fashion_mnist_mini and evaluated with
`--budget` and `--save-logits` once per module; the logits dump is the simulated protocol's
reference. Near-ties (boostnet.deployment.agreement: a confidence within 1e-5 of a threshold it
is compared with, or top-2 probabilities that close) may legitimately fall either way in another
runtime's float rounding: they are counted, reported and excluded, and must stay rare.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import os
import shutil
import stat
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import eval_cifar100
from boostnet.data.class_names import FASHION_MNIST
from boostnet.data.readers import load_fashion_mnist_mini
from boostnet.deployment.agreement import RELATIVE_TOLERANCE, protocol_decisions, relative_errors
from boostnet.deployment.export import is_export, load_export
from boostnet.deployment.runner import classify, stage_outputs
from boostnet.deployment.source import run_policy
from boostnet.evaluation.policy import POLICY_FILE, SCHEMA_VERSION, read_policy
from tests.conftest import ROOT
from tests.run_fixtures import file_states, make_trained_run
from utils.errors import run_cli

BUDGET = 2.5e6
TEST_IMAGES = 1000  # the whole test split of fashion_mnist_mini
PNG_IMAGES = 48
MAX_TIE_SHARE = 0.02


def script_main(name: str) -> Callable:
    """main() of scripts/<name>.py, loaded as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.main


def run_script(name: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one scripts/<name>.py command, run in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(script_main(name), [str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An evaluated tiny run (policy + logits dump), its ONNX and torch.export exports, PNG test images."""
    root = tmp_path_factory.mktemp("deploy")
    run = make_trained_run(root / "run", "--dataset", "fashion_mnist_mini")
    logits = root / "logits.npz"
    eval_cifar100.main(
        ["--evaluate-from", str(run), "--budget", str(BUDGET), "--save-logits", str(logits), "--workers", "0"]
    )
    for form, folder in (("onnx", "onnx"), ("torch-export", "pt2")):
        run_cli_quietly("export", [run, "--format", form, "--out", root / folder])
    pngs = root / "pngs"
    pngs.mkdir()
    images = load_fashion_mnist_mini()[2]
    for index in range(PNG_IMAGES):
        Image.fromarray(images[index].permute(1, 2, 0).numpy()).save(pngs / f"test_{index:04d}.png")
    return {
        "run": run,
        "logits": logits,
        "onnx": root / "onnx",
        "pt2": root / "pt2",
        "pngs": pngs,
        "root": root,
    }


def run_cli_quietly(name: str, argv: list) -> None:
    """Run scripts/<name>.py and require exit status 0."""
    with pytest.raises(SystemExit) as stop:
        run_cli(script_main(name), [str(arg) for arg in argv])
    assert stop.value.code == 0


def test_policy_schema_costs_classes_preprocessing_and_digest(deployed):
    run = deployed["run"]
    document = json.loads((run / POLICY_FILE).read_text())
    anytime = json.loads((run / "anytime.json").read_text())
    budget = json.loads((run / "budget.json").read_text())
    assert document["schema"] == "boostnet.exit_policy" and document["version"] == SCHEMA_VERSION
    assert document["checkpoint_sha256"] == hashlib.sha256((run / "model_best.pth").read_bytes()).hexdigest()
    assert document["exit_costs"]["macs"] == [row["macs"] for row in anytime["exits"]]
    assert len(document["levels"]) == 39 and all(
        len(level["thresholds"]) == 3 for level in document["levels"]
    )
    assert document["budget"]["thresholds"] == budget["thresholds"]
    assert document["budget"]["expected_macs"] == budget["val_expected_cost"] <= BUDGET
    assert document["classes"] == list(FASHION_MNIST)
    assert document["objective"] == {"name": "boost", "boosted": True, "factors": [0.5, 0.5, 0.5]}
    prep = document["preprocessing"]
    assert (prep["image_size"], prep["channels"], prep["mean"]) == (32, 3, [0.219] * 3)


def test_a_later_evaluation_keeps_what_an_earlier_one_fitted_and_flat_curve_levels_deploy_their_accuracy(
    deployed, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(deployed["run"], run)
    earlier = json.loads((run / POLICY_FILE).read_text())
    eval_cifar100.main(
        ["--evaluate-from", str(run), "--evalmode", "dynamic", "--flat_curve", "--workers", "0"]
    )
    assert "with the budget fitted earlier for this checkpoint" in capsys.readouterr().out
    policy = json.loads((run / POLICY_FILE).read_text())
    assert policy["budget"] == earlier["budget"]
    sweep = {level["level"]: level for level in json.loads((run / "budgeted.json").read_text())["levels"]}
    borrowed = 0
    for entry in policy["levels"]:
        source = sweep[entry["thresholds_of_level"]]
        assert sweep[entry["level"]]["accuracy_level"] == entry["thresholds_of_level"] <= entry["level"]
        assert (
            entry["thresholds"],
            entry["expected_macs"],
            entry["val_accuracy"],
            entry["test_accuracy"],
        ) == (
            source["thresholds"],
            source["val_expected_cost"],
            source["val_accuracy"],
            source["test_accuracy"],
        )
        borrowed += entry["thresholds_of_level"] != entry["level"]
    assert borrowed > 0  # the flat curve did flatten some levels, so the rule was exercised
    eval_cifar100.main(
        ["--evaluate-from", str(run), "--evalmode", "anytime", "--budget", "3e6", "--workers", "0"]
    )
    again = json.loads((run / POLICY_FILE).read_text())
    assert again["levels"] == policy["levels"] and again["budget"]["budget"] == 3e6


def test_a_budget_the_full_network_meets_gets_a_note(deployed, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(deployed["run"], run)
    full = read_policy(run / POLICY_FILE).macs[-1]
    capsys.readouterr()
    eval_cifar100.main(
        ["--evaluate-from", str(run), "--evalmode", "anytime", "--budget", str(full), "--workers", "0"]
    )
    assert f"note: --budget {full / 1e6:.2f}M is at or above the full network's" in capsys.readouterr().out
    eval_cifar100.main(
        ["--evaluate-from", str(run), "--evalmode", "anytime", "--budget", str(full - 1), "--workers", "0"]
    )
    assert "note: --budget" not in capsys.readouterr().out


def test_an_earlier_policy_is_kept_only_when_intact_of_this_version_and_the_same_weights(deployed, tmp_path):
    from boostnet.evaluation.policy import with_earlier_settings

    earlier = deployed["run"] / POLICY_FILE
    stored = json.loads(earlier.read_text())
    document = {**stored, "levels": [], "budget": None}
    completed, note = with_earlier_settings(document, earlier)
    assert completed == stored and note == "(with the levels and budget fitted earlier for this checkpoint)"
    short = {**stored["levels"][3], "thresholds": stored["levels"][3]["thresholds"][:1]}
    cases = {
        "other checkpoint": ({**document, "checkpoint_sha256": "0" * 64}, stored, "another checkpoint"),
        "ema weights": ({**document, "weights": "ema"}, stored, "another checkpoint or weights"),
        "version 1": (document, {**stored, "version": 1}, "version 1"),
        "damaged": (document, {**stored, "levels": [short]}, "level 4 needs 3 thresholds"),
    }
    for name, (new, old, words) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(old))
        completed, note = with_earlier_settings(new, path)
        assert (
            completed == new
            and note.startswith("(the earlier policy's levels and budget dropped")
            and words in note
        ), name
    path.write_text("{")
    completed, note = with_earlier_settings(document, path)
    assert completed == document and "unreadable" in note


def policy_table() -> dict[str, str]:
    """docs/deployment.md's exit-policy table: every field named in a row's first cell, with the
    row's meaning."""
    import re

    page = (ROOT / "docs" / "deployment.md").read_text()
    section = page.split("## The exit policy")[1].split("\n## ")[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return {name: meaning for fields, meaning in rows for name in re.findall(r"`(\w+)`", fields)}


def test_the_documented_policy_schema_names_every_field_written(deployed):
    import re

    document = json.loads((deployed["run"] / POLICY_FILE).read_text())
    table = policy_table()
    level_fields = set(re.findall(r"`(\w+)`", table["levels"]))
    assert set(document) <= set(table)
    assert set(document["levels"][0]) <= level_fields and set(document["budget"]) - {"budget"} <= level_fields


def test_a_policy_for_another_checkpoint_is_refused(deployed, tmp_path, capsys):
    document = json.loads((deployed["run"] / POLICY_FILE).read_text())
    document["checkpoint_sha256"] = "0" * 64
    other = tmp_path / "other_policy.json"
    other.write_text(json.dumps(document))
    before = file_states(deployed["run"])
    for source in (deployed["run"], deployed["onnx"]):
        status, out, err = run_script("predict", [source, deployed["pngs"], "--policy", other], capsys)
        assert status == 2 and out == "" and len(err.splitlines()) == 1 and "sha256 0000000000000000" in err
        assert err.startswith(f"error: {other} was fitted for checkpoint"), err
    assert file_states(deployed["run"]) == before


def evaluation_inputs(count: int) -> torch.Tensor:
    """The first `count` test images exactly as evaluation feeds them to the network."""
    from boostnet.data.datasets import DATASETS
    from boostnet.data.loaders import tensor_transforms

    transform = tensor_transforms(DATASETS["fashion_mnist_mini"], train=False)
    return torch.stack([transform(image) for image in load_fashion_mnist_mini()[2][:count]])


@pytest.mark.parametrize("folder", ["onnx", "pt2"])
def test_exported_stages_reproduce_every_exit_output(deployed, folder):
    torch.set_num_threads(1)
    reference = torch.from_numpy(np.load(deployed["logits"])["logits"][:, :TEST_IMAGES])
    outputs = torch.from_numpy(
        np.stack(stage_outputs(load_export(deployed[folder]).backend, evaluation_inputs(TEST_IMAGES)))
    )
    error = ((outputs - reference).abs().amax(dim=2) / reference.abs().amax(dim=2)).max().item()
    assert error <= RELATIVE_TOLERANCE
    assert relative_errors(list(outputs.numpy()), list(reference)) == pytest.approx(
        ((outputs - reference).abs().amax(dim=2) / reference.abs().amax(dim=2)).amax(dim=1).tolist()
    )


def test_each_torch_export_stage_holds_only_the_weights_it_reads(deployed):
    """torch.export saves every tensor of the module it exports; each stage file keeps the weights
    its own graph reads and no other, so the stages share none (not a network copy per stage)."""
    holders: dict[str, int] = {}
    for n, path in enumerate(sorted(deployed["pt2"].glob("stage_*.pt2"))):
        program = torch.export.load(str(path))
        read = {node.name for node in program.graph.nodes if node.op == "placeholder" and node.users}
        held = {spec.target for spec in program.graph_signature.input_specs if spec.target}
        nonempty = {name for name in held if program.state_dict[name].numel() > 0}
        targets = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs}
        assert nonempty == {targets[name] for name in read if targets.get(name)}, path.name
        assert not nonempty & holders.keys(), path.name
        holders.update(dict.fromkeys(nonempty, n))
    assert len(set(holders.values())) == 3


def simulated(logits: np.ndarray, thresholds: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(exit, class, near-tie) per sample by the simulated protocol on evaluation's outputs."""
    decisions = protocol_decisions(torch.from_numpy(logits), thresholds)
    return decisions.exits, decisions.classes, decisions.near_tie


def test_near_ties_are_confidences_within_the_tolerance_of_a_threshold_they_meet_or_a_top_two_tie():
    probabilities = torch.tensor(
        [
            [[0.5, 0.3, 0.2], [0.4 + 5e-6, 0.35, 0.25 - 5e-6], [0.6, 0.2, 0.2]],  # exit 1
            [[0.7, 0.2, 0.1], [0.8, 0.1, 0.1], [0.45, 0.45, 0.1]],  # exit 2 (the last)
        ]
    )
    decisions = protocol_decisions(probabilities.log(), [0.4, 0.9])
    assert decisions.exits.tolist() == [0, 0, 0] and decisions.classes.tolist() == [0, 0, 0]
    assert decisions.near_tie.tolist() == [False, True, False]
    last = protocol_decisions(probabilities.log(), [0.99, 0.9])  # all reach exit 2; sample 3's top two tie
    assert last.exits.tolist() == [1, 1, 1] and last.near_tie.tolist() == [False, False, True]


@pytest.mark.parametrize("folder", ["onnx", "pt2"])
def test_early_exit_matches_the_simulated_protocol_for_every_test_sample_at_every_setting(deployed, folder):
    torch.set_num_threads(1)
    export = load_export(deployed[folder])
    logits = np.load(deployed["logits"])["logits"]
    images = evaluation_inputs(TEST_IMAGES)
    assert logits.shape[1] == len(images) == TEST_IMAGES
    ties = 0
    for setting in export.policy.levels + [export.policy.budget]:
        exits, classes, near = simulated(logits, setting.thresholds)
        decisions = classify(export.backend, images, setting.thresholds)
        differs = (torch.from_numpy(decisions.exits) != exits) | (
            torch.from_numpy(decisions.classes) != classes
        )
        assert not (differs & ~near).any(), setting.name
        ties += int(near.sum())
    assert ties <= MAX_TIE_SHARE * TEST_IMAGES * 40


def test_export_verify_reports_agreement_on_the_test_split(deployed, tmp_path, capsys):
    out = tmp_path / "verified"
    status, printed, err = run_script("export", [deployed["run"], "--out", out, "--verify"], capsys)
    report = json.loads((out / "agreement.json").read_text())
    assert status == 0 and report["agrees"] and report["samples"] == TEST_IMAGES, err
    assert max(report["max_relative_error"]) <= report["relative_tolerance"] == 1e-4
    assert len(report["settings"]) == 40 and all(
        entry["same"] + entry["near_ties_differing"] + entry["differing"] == TEST_IMAGES
        and entry["differing"] == 0
        for entry in report["settings"]
    )
    assert printed.splitlines()[-1].startswith(f"agrees on {TEST_IMAGES} test images")


def test_relative_error_of_equal_zero_outputs_is_zero_and_of_nan_infinite():
    zeros = torch.zeros(2, 3)
    assert relative_errors([zeros.numpy(), np.full((2, 3), np.nan, np.float32)], [zeros, zeros]) == [
        0.0,
        math.inf,
    ]


def test_agreement_catches_an_export_that_decides_otherwise(deployed):
    from boostnet.deployment.agreement import measure_agreement
    from boostnet.deployment.runner import TorchStages

    export = load_export(deployed["onnx"])
    network = load_export_network(deployed["run"])

    class OffByOne(TorchStages):
        """The export with every predicted class shifted by one."""

        def __init__(self, backend):
            self.backend, self.num_exits, self.boosted = backend, backend.num_exits, backend.boosted

        def run(self, n, inputs):
            *rest, predicted = self.backend.run(n, inputs)
            return [*rest, (predicted + 1) % 10]

    images = [evaluation_inputs(64)]
    honest = measure_agreement(network, export.backend, [export.policy.budget], images)
    wrong = measure_agreement(network, OffByOne(export.backend), [export.policy.budget], images)
    assert honest.agrees and not wrong.agrees and wrong.settings[0].differing > 0


def load_export_network(run: Path):
    """The evaluated run's network on the CPU, as export.py loads it."""
    from args import parse_evaluation_args
    from boostnet.deployment.source import loading_flags
    from boostnet.evaluation.loading import load_run

    policy, checkpoint = run_policy(run)
    return load_run(parse_evaluation_args(loading_flags(checkpoint, policy))).network


@pytest.mark.parametrize("source", ["onnx", "run"])
def test_predict_on_png_files_exits_as_the_protocol_simulates(deployed, source, capsys):
    policy = read_policy(deployed["run"] / POLICY_FILE)
    logits = np.load(deployed["logits"])["logits"][:, :PNG_IMAGES]
    for flags, setting in ((["--level", "20"], policy.levels[19]), ([], policy.budget)):
        status, out, err = run_script(
            "predict", [deployed[source], deployed["pngs"], "--json", *flags], capsys
        )
        assert status == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        exits, classes, near = simulated(logits, setting.thresholds)
        rows = lines[:-1]
        assert [Path(row["image"]).name for row in rows] == [f"test_{k:04d}.png" for k in range(PNG_IMAGES)]
        for row, exit_index, label, tie in zip(rows, exits.tolist(), classes.tolist(), near.tolist()):
            assert tie or (row["exit"], row["label"]) == (exit_index + 1, label)
            assert row["class"] == FASHION_MNIST[row["label"]] and row["macs"] == policy.macs[row["exit"] - 1]
        summary = lines[-1]["summary"]
        assert summary["exit_histogram"] == [sum(row["exit"] == n + 1 for row in rows) for n in range(3)]
        assert summary["setting"] == setting.name and summary["images"] == PNG_IMAGES


def test_an_unreadable_file_is_one_line_and_the_others_are_classified(deployed, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(deployed["pngs"], folder)
    (folder / "notes.png").write_text("not an image")
    status, out, err = run_script("predict", [deployed["onnx"], folder], capsys)
    assert status == 1
    assert (
        err.splitlines() == [line for line in err.splitlines() if "notes.png" in line]
        and len(err.splitlines()) == 1
    )
    assert len(out.splitlines()) == PNG_IMAGES + 1


def test_sixteen_bit_grey_reads_as_its_eight_bit_levels_and_an_oversized_image_is_one_line(
    deployed, tmp_path, capsys, monkeypatch
):
    from boostnet.deployment.images import image_transform, read_image

    policy = read_policy(deployed["run"] / POLICY_FILE)
    grey = np.asarray(Image.open(deployed["pngs"] / "test_0000.png").convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    transform = image_transform(policy)
    eight, _ = read_image(tmp_path / "grey8.png", policy, transform)
    sixteen, _ = read_image(tmp_path / "grey16.png", policy, transform)
    assert torch.equal(eight, sixteen)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32 // 4)  # a 32x32 image is then a "bomb"
    status, out, err = run_script("predict", [deployed["onnx"], tmp_path / "grey8.png"], capsys)
    assert status == 1 and "grey8.png: cannot read this image" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("choice", ["--budget", "--thresholds"])
def test_predict_by_budget_or_explicit_thresholds_uses_that_setting(deployed, choice, capsys):
    export = load_export(deployed["onnx"])
    policy = export.policy
    if choice == "--budget":  # between two levels' costs: the best level that fits
        budget = (policy.levels[9].expected_macs + policy.levels[10].expected_macs) / 2
        fitting = [entry for entry in policy.levels + [policy.budget] if entry.expected_macs <= budget]
        setting = max(fitting, key=lambda entry: (entry.val_accuracy, -entry.expected_macs))
        flags, thresholds = ["--budget", str(budget)], setting.thresholds
    else:
        thresholds = [0.2, 0.15, float("-inf")]
        flags = ["--thresholds", "0.2", "0.15"]  # the last exit's may be left out
    status, out, _ = run_script("predict", [deployed["onnx"], deployed["pngs"], "--json", *flags], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    images = torch.stack(
        [
            image_transform_of(policy)(Image.open(deployed["pngs"] / f"test_{k:04d}.png"))
            for k in range(PNG_IMAGES)
        ]
    )
    decisions = classify(export.backend, images, thresholds)
    assert status == 0 and [(row["exit"], row["label"]) for row in rows[:-1]] == list(
        zip((decisions.exits + 1).tolist(), decisions.classes.tolist())
    )
    cheapest = min(entry.expected_macs for entry in policy.levels + [policy.budget])
    status, out, err = run_script(
        "predict", [deployed["onnx"], deployed["pngs"], "--budget", str(cheapest / 2)], capsys
    )
    assert (status, out, len(err.splitlines())) == (2, "", 1) and "the cheapest setting" in err


def image_transform_of(policy):
    """predict.py's transform of an opened image (RGB, the policy's preprocessing)."""
    from boostnet.deployment.images import image_transform

    transform = image_transform(policy)
    return lambda image: transform(image.convert("RGB"))


def test_torch_export_backend_matches_onnx(deployed, capsys):
    results = []
    for folder in ("onnx", "pt2"):
        status, out, _ = run_script(
            "predict", [deployed[folder], deployed["pngs"], "--json", "--level", "25"], capsys
        )
        assert status == 0
        results.append(
            [(row.get("exit"), row.get("label")) for row in map(json.loads, out.splitlines()[:-1])]
        )
    assert results[0] == results[1]


def unboost(manifest: dict) -> None:
    """A manifest that claims independent exits, with its stage names changed to match: consistent
    in itself, but not with the boosted graphs, which still read `previous`."""
    manifest["boosted"] = False
    for entry in manifest["stages"][1:]:
        entry["inputs"].remove("previous")


def damaged_copies(deployed: dict[str, Path], tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Export directories each broken one way, and the words their refusal must contain."""
    cases = {}
    missing = tmp_path / "missing"
    shutil.copytree(deployed["onnx"], missing)
    (missing / "stage_2.onnx").unlink()
    cases["missing stage"] = (missing, "missing")
    replaced = tmp_path / "replaced"
    shutil.copytree(deployed["onnx"], replaced)
    (replaced / "stage_1.onnx").write_bytes(b"garbage")
    cases["replaced stage"] = (replaced, "damaged or replaced")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(deployed["onnx"], corrupt)
    (corrupt / "stage_1.onnx").write_bytes(b"garbage")
    manifest = json.loads((corrupt / "manifest.json").read_text())
    manifest["stages"][1]["sha256"] = hashlib.sha256(b"garbage").hexdigest()
    (corrupt / "manifest.json").write_text(json.dumps(manifest))
    cases["corrupt onnx"] = (corrupt, "ONNX Runtime cannot load")
    edits = {
        "manifest without stages": ("manifest.json", lambda m: m.pop("stages"), "damaged export manifest"),
        "reordered stages": ("manifest.json", lambda m: m["stages"].reverse(), "does not read the images"),
        "swapped stages": (
            "manifest.json",
            lambda m: m["stages"].insert(1, m["stages"].pop(2)),
            "does not read what stage 0 returns",
        ),
        "boosted flag wrong": ("manifest.json", lambda m: m.update(boosted=False), "or a wrong boosted"),
        "manifest consistent but unlike the graphs": (
            "manifest.json",
            unboost,
            "do not run one after another",
        ),
        "policy of another input": (
            "exit_policy.json",
            lambda p: p["preprocessing"].update(channels=1),
            "stage 0 does not take the policy's input (1 channels",
        ),
        "level short of thresholds": (
            "exit_policy.json",
            lambda p: p["levels"][3]["thresholds"].pop(),
            "damaged exit policy",
        ),
    }
    for name, (file, edit, words) in edits.items():
        folder = tmp_path / name.replace(" ", "_")
        shutil.copytree(deployed["onnx"], folder)
        document = json.loads((folder / file).read_text())
        edit(document)
        (folder / file).write_text(json.dumps(document))
        cases[name] = (folder, words)
    return cases


def test_bad_exports_and_inputs_are_one_line_with_status_2(deployed, tmp_path, capsys):
    for name, (folder, words) in damaged_copies(deployed, tmp_path).items():
        status, out, err = run_script("predict", [folder, deployed["pngs"]], capsys)
        assert (status, out, len(err.splitlines())) == (2, "", 1), name
        assert words in err, (name, err)
    empty = tmp_path / "empty"
    empty.mkdir()
    status, out, err = run_script("predict", [deployed["onnx"], empty], capsys)
    assert (status, out, len(err.splitlines())) == (2, "", 1) and "no image files" in err
    status, out, err = run_script("predict", [deployed["onnx"], f"{tmp_path}/*"], capsys)
    assert (status, out, len(err.splitlines())) == (2, "", 1) and "only folders" in err
    for flags, words in (
        (["--thresholds", "nan", "0.5", "0.5"], "--thresholds: nan"),
        (["--thresholds", "0.5"], "give 2 or 3 values, not 1"),
        (["--level", "40"], "levels 1..39"),
        (["--latency-budget", "nan"], "--latency-budget: must be a finite number above 0"),
    ):
        status, out, err = run_script("predict", [deployed["onnx"], deployed["pngs"], *flags], capsys)
        assert (status, out, len(err.splitlines())) == (2, "", 1) and words in err, flags
    before = file_states(deployed["onnx"])
    status, _, err = run_script("export", [deployed["run"], "--out", deployed["onnx"]], capsys)
    assert status == 2 and "already exists" in err and file_states(deployed["onnx"]) == before
    status, _, err = run_script(
        "export", [deployed["run"], "--out", tmp_path / "x", "--verify-images", "5"], capsys
    )
    assert status == 2 and "--verify-images: give --verify too" in err and not (tmp_path / "x").exists()
    mine = tmp_path / "fresh.partial"  # a name an export of `fresh` once built in, and removed
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    status, _, err = run_script("export", [deployed["run"], "--out", tmp_path / "fresh"], capsys)
    assert status == 0 and (mine / "notes.txt").read_text() == "mine", err
    assert is_export(tmp_path / "fresh") and not list(tmp_path.glob(".fresh*"))


def test_wrong_paths_and_numbers_are_one_line_naming_the_culprit_before_any_work(deployed, tmp_path, capsys):
    a_file = deployed["pngs"] / "test_0000.png"
    no_manifest = tmp_path / "no_manifest"
    shutil.copytree(deployed["onnx"], no_manifest)
    (no_manifest / "manifest.json").unlink()
    cases = [
        (
            "export",
            [deployed["run"], "--out", a_file / "x"],
            f"argument --out: {a_file} is a file, not a folder",
        ),
        ("measure_exit_speed", [deployed["run"], "--out", a_file / "m"], f"{a_file} is a file, not a folder"),
        ("measure_exit_speed", [deployed["onnx"]], "an export directory; give the run directory"),
        (
            "measure_exit_speed",
            [deployed["run"], "--levels", "0"],
            "--levels 0: the exit policy has levels 1..39",
        ),
        ("export", [deployed["pngs"] / "none", "--out", tmp_path / "e"], "none: no such folder"),
        ("predict", [tmp_path / "nowhere", deployed["pngs"]], "nowhere: no such folder"),
        ("predict", [deployed["run"], a_file, "--policy", tmp_path / "nope.json"], "nope.json: no such file"),
        ("predict", [no_manifest, a_file], "exported stages without manifest.json"),
        (
            "predict",
            [deployed["onnx"], a_file, "--budget", "nan"],
            "--budget: must be a finite number above 0",
        ),
    ]
    before = file_states(deployed["root"])
    for name, argv, words in cases:
        status, out, err = run_script(name, argv, capsys)
        assert (status, out, len(err.splitlines())) == (2, "", 1) and words in err, (name, argv, err)
    assert file_states(deployed["root"]) == before and not (tmp_path / "e").exists()


def test_saved_test_images_are_the_pixels_evaluation_reads_named_by_class(deployed, tmp_path, capsys):
    out = tmp_path / "pngs"
    status, printed, err = run_script(
        "save_test_images", [deployed["run"], "--count", "3", "--out", out], capsys
    )
    assert status == 0 and printed.startswith("3 test images of fashion_mnist_mini written"), err
    _, _, images, labels = load_fashion_mnist_mini()
    table = (out / "labels.csv").read_text().splitlines()
    assert table[0] == "file,label,class" and len(table) == 4
    for index, row in enumerate(table[1:]):
        name, label, title = row.split(",")
        assert (int(label), title) == (int(labels[index]), FASHION_MNIST[int(labels[index])])
        assert name == f"{index:05d}_{title.replace('/', '_').replace(' ', '_')}.png"
        assert np.array_equal(np.asarray(Image.open(out / name)), images[index].permute(1, 2, 0).numpy())
    before = file_states(out)
    status, printed, err = run_script("save_test_images", [deployed["run"], "--out", out], capsys)
    assert (status, printed, len(err.splitlines())) == (2, "", 1) and "already exists" in err
    assert file_states(out) == before


def test_saving_test_images_of_a_folder_dataset_points_at_its_files(deployed, tmp_path, capsys):
    run = tmp_path / "folder_run"
    shutil.copytree(deployed["run"], run)
    config = json.loads((run / "config.json").read_text())
    config.update(dataset="folder", num_classes=10, image_size=32, data_root=str(tmp_path / "images"))
    (run / "config.json").write_text(json.dumps(config))
    status, out, err = run_script("save_test_images", [run, "--out", tmp_path / "pngs"], capsys)
    assert (status, out, len(err.splitlines())) == (2, "", 1) and "read from class folders" in err, err
    assert f"{tmp_path / 'images' / 'val'}" in err and not (tmp_path / "pngs").exists()


def test_an_export_directory_is_readable_as_the_umask_allows(deployed, tmp_path):
    mask = os.umask(0o027)
    try:
        run_cli_quietly("export", [deployed["run"], "--out", tmp_path / "served"])
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "served").stat().st_mode) == 0o750


def test_the_summary_states_the_setting_and_what_it_promised(deployed, capsys):
    policy = read_policy(deployed["run"] / POLICY_FILE)
    level = policy.levels[19]
    status, out, _ = run_script(
        "predict", [deployed["onnx"], deployed["pngs"] / "test_0000.png", "--level", "20"], capsys
    )
    assert status == 0
    promise = f"expected {level.expected_macs / 1e6:.2f}M MACs, validation top-1 {level.val_accuracy:.2f}%"
    assert out.splitlines()[-1].startswith(f"level 20 ({promise}): 1 image (0 unreadable)")


class Payload:
    """A pickled object that creates `marker` when it is unpickled: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def tampered_archive(deployed: dict[str, Path], folder: Path, change: Callable) -> None:
    """A copy of the torch.export export in `folder` whose stage 0 archive `change` rewrote
    (change(name, data) -> [(name, data), ...]), its manifest digest updated as an attacker would."""
    import zipfile

    shutil.copytree(deployed["pt2"], folder)
    stage = folder / "stage_0.pt2"
    with zipfile.ZipFile(deployed["pt2"] / "stage_0.pt2") as source, zipfile.ZipFile(stage, "w") as target:
        for item in source.infolist():
            for name, data in change(item.filename, source.read(item.filename)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # zipfile warns of a duplicate name
                    target.writestr(name, data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["stages"][0]["sha256"] = hashlib.sha256(stage.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_torch_export_archive_that_could_unpickle_is_refused_before_loading(deployed, tmp_path, capsys):
    marker = tmp_path / "unpickled"
    pickled = io.BytesIO()
    torch.save({"weight": Payload(marker)}, pickled)

    def flag_pickle(name: str, data: bytes) -> list:
        if name.endswith("weights_config.json"):
            data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
        return [(name, data)]

    def add_legacy_weights(name: str, data: bytes) -> list:  # torch.export.load prefers this file
        extra = [("stage_0/data/weights/model.pt", pickled.getvalue())] if name.endswith("model.json") else []
        return [(name, data), *extra]

    def pickle_behind_a_duplicate(name: str, data: bytes) -> list:  # torch reads the first copy
        if name.endswith("weights_config.json"):
            return [flag_pickle(name, data)[0], (name, data)]
        return [(name, pickled.getvalue() if name.endswith("/weights/weight_0") else data)]

    cases = {
        "use_pickle": (flag_pickle, "pickled objects"),
        "legacy": (add_legacy_weights, "model.pt"),
        "duplicate": (pickle_behind_a_duplicate, "twice"),
    }
    for case, (change, words) in cases.items():
        tampered_archive(deployed, tmp_path / case, change)
        status, out, err = run_script("predict", [tmp_path / case, deployed["pngs"]], capsys)
        assert (status, out, len(err.splitlines())) == (2, "", 1) and words in err, (case, err)
    assert not marker.exists()


def test_run_policy_names_its_checkpoint(deployed):
    policy, checkpoint = run_policy(deployed["run"])
    assert checkpoint == deployed["run"] / "model_best.pth" and policy.num_exits == 3


def test_measured_speed_rows_hold_promise_and_measurement_per_level(deployed, capsys):
    run = deployed["root"] / "speed_run"
    shutil.copytree(deployed["run"], run)
    argv = [run, "--levels", "5", "30", "--batch-sizes", "1", "4", "--images", "8", "--repeats", "1"]
    status, out, err = run_script("measure_exit_speed", [*argv, "--latency-budget", "1e6", "1e-9"], capsys)
    assert status == 0, err
    report = json.loads((run / "real_exit_levels.json").read_text())
    policy = read_policy(run / POLICY_FILE)
    rows = [row for row in report["rows"] if row["latency_budget_ms"] is None]
    assert (
        len(rows) == 2 * 2 * 3
        and (run / "real_exit_levels.csv").is_file()
        and (run / "real_exit_levels.png").is_file()
    )
    best = max(policy.levels + [policy.budget], key=lambda entry: (entry.val_accuracy, -entry.expected_macs))
    chosen = [row for row in report["rows"] if row["latency_budget_ms"] == 1e6]
    assert len(chosen) == 4 and all(
        row["setting"] == best.name and row["expected_ms_per_image"] > 0 for row in chosen
    )
    assert len(report["unmet_latency_budgets"]) == 4 and "within" in out and "--latency-budget 1e-09" in out
    expected = {
        entry.name: entry.expected_macs for entry in (policy.levels[4], policy.levels[29], policy.budget)
    }
    for row in rows:
        assert row["promised_speedup"] == pytest.approx(policy.macs[-1] / expected[row["setting"]])
        assert row["measured_over_promised"] == pytest.approx(
            row["measured_speedup"] / row["promised_speedup"]
        )
        assert row["latency_promised_speedup"] >= 1 and row["measured_over_latency_promised"] == (
            pytest.approx(row["measured_speedup"] / row["latency_promised_speedup"])
        )
        assert 0 < row["paired_speedup_low"] <= row["paired_speedup_high"]
    assert {(row["backend"], row["batch_size"]) for row in rows} == {
        (backend, size) for backend in ("pytorch", "onnxruntime") for size in (1, 4)
    }
    assert "8 test images timed; written to" in out
    before = file_states(run)
    status, out, err = run_script("measure_exit_speed", argv, capsys)
    assert (status, out, len(err.splitlines())) == (2, "", 1) and "already exists" in err
    assert file_states(run) == before


def test_device_rows_time_the_evaluators_early_exit_against_the_same_promise(deployed):
    """bench_deployment.py --device cuda's rows; on this CPU the same code runs eagerly."""
    from args import parse_evaluation_args
    from boostnet.deployment.source import loading_flags
    from boostnet.deployment.speed import SPEED_COLUMNS, device_speed_rows
    from boostnet.evaluation.loading import load_run

    policy, checkpoint = run_policy(deployed["run"])
    network = load_run(parse_evaluation_args(loading_flags(checkpoint, policy))).network
    images = load_fashion_mnist_mini()[2][:8].float() / 255
    rows = device_speed_rows(
        network, policy.levels[9], policy.macs[-1], images, [1, 4], torch.device("cpu"), 1
    )
    assert [(row["backend"], row["batch_size"]) for row in rows] == [("pytorch-cpu", 1), ("pytorch-cpu", 4)]
    for row in rows:
        assert list(row) == list(SPEED_COLUMNS) and row["setting"] == policy.levels[9].name
        assert row["promised_speedup"] == pytest.approx(policy.macs[-1] / policy.levels[9].expected_macs)
        assert row["measured_over_promised"] == pytest.approx(
            row["measured_speedup"] / row["promised_speedup"]
        )
        assert row["latency_promised_speedup"] is None and row["early_exit_images_per_second"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_bench_deployment_on_cuda_without_a_gpu_is_one_line(capsys):
    status, out, err = run_script("bench_deployment", ["--device", "cuda"], capsys)
    assert (status, out) == (2, "") and err == (
        "error: --device cuda: no CUDA device is available here; use --device cpu\n"
    )


def test_a_latency_budget_chooses_the_most_accurate_setting_its_stage_latencies_fit(deployed):
    from boostnet.deployment.latency import choose_for_latency, expected_seconds

    policy = read_policy(deployed["run"] / POLICY_FILE)
    seconds = [1e-3, 2e-3, 4e-3]  # per image, stages 1..3
    offered = policy.levels + [policy.budget]
    estimates = {entry.name: 1000 * expected_seconds(entry, seconds) for entry in offered}
    budget_ms = sorted(estimates.values())[len(offered) // 2]
    fitting = [entry for entry in offered if estimates[entry.name] <= budget_ms]
    best = max(fitting, key=lambda entry: (entry.val_accuracy, -estimates[entry.name]))
    most_accurate = max(offered, key=lambda entry: entry.val_accuracy)
    assert estimates[most_accurate.name] > budget_ms  # the budget binds: latency decides the choice
    choice = choose_for_latency(policy, seconds, budget_ms)
    assert (choice.setting, choice.expected_ms) == (best, estimates[best.name])
    assert choice.fields(budget_ms * 2)["within_latency_budget"] is False


def test_predict_reports_the_latency_it_promised_and_achieved(deployed, capsys):
    policy = read_policy(deployed["run"] / POLICY_FILE)
    best = max(policy.levels + [policy.budget], key=lambda entry: (entry.val_accuracy, -entry.expected_macs))
    argv = [deployed["onnx"], deployed["pngs"], "--json", "--latency-budget", "1e6", "--batch-size", "4"]
    status, out, _ = run_script("predict", argv, capsys)
    summary = json.loads(out.splitlines()[-1])["summary"]
    assert status == 0 and summary["setting"] == best.name and summary["latency_budget_ms"] == 1e6
    assert summary["thresholds"] == [str(t) if abs(t) == float("inf") else t for t in best.thresholds]
    assert (
        0 < summary["expected_ms_per_image"] and summary["achieved_ms_per_image"] == summary["ms_per_image"]
    )
    assert summary["within_latency_budget"] is True
    status, out, err = run_script(
        "predict", [deployed["onnx"], deployed["pngs"], "--latency-budget", "1e-9"], capsys
    )
    assert (status, out, len(err.splitlines())) == (2, "", 1) and "--latency-budget 1e-09" in err


@pytest.mark.parametrize("weights, flag", [("ema", "--eval-ema"), ("live", "--no-eval-ema")])
def test_deployment_loads_the_weights_the_policy_was_fitted_on(weights, flag):
    """A policy fitted on a checkpoint's --model-ema average must be deployed with that average,
    and one fitted on the live weights with those, whatever evaluation would pick by default."""
    from types import SimpleNamespace

    from boostnet.deployment.source import loading_flags

    policy = SimpleNamespace(document={"weights": weights})
    flags = loading_flags(Path("run/model_best.pth"), policy)
    assert flags == ["--evaluate-from", "run/model_best.pth", "--device", "cpu", "--workers", "0", flag]
