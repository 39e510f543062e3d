"""`--arch timm:NAME` (models/timm_backbone.py): timm CNNs and ViTs as boosted multi-exit networks.

The unit tests check the stage-by-stage layout of every supported family against timm's own
`forward_features`, the exit placement, the costs against known figures, and `--pretrained` /
`--freeze-backbone`. The end-to-end tests drive the public programs (train, resume, evaluate
in both modes at a budget with real early exit, op_counter) for a timm ResNet and a timm ViT on
`digits`, shrunk through `--model-kwargs` so they run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import eval_cifar100
import op_counter
import train_cifar100
from models.costs import counted_operations
from models.registry import ConfigError, InputSpec, backbone, create_model
from models.timm_backbone import load_pretrained
from utils.errors import UserError
from utils.flags import literal_kwargs

timm = pytest.importorskip("timm")

SMALL_RESNET = ["channels=(8,16,32,64)", "stem_width=8"]
SMALL_VIT = ["img_size=32", "patch_size=4", "depth=4", "embed_dim=48", "num_heads=2"]
FAMILIES = [
    ("resnet18", SMALL_RESNET),
    ("convnext_atto", []),
    ("efficientnet_b0", []),
    ("mobilenetv3_small_050", []),
    ("regnetx_002", []),
    ("vit_tiny_patch16_224", SMALL_VIT),
    ("deit_tiny_patch16_224", SMALL_VIT),
    ("swin_tiny_patch4_window7_224", ["img_size=32", "window_size=2", "depths=(1,1,1,1)", "embed_dim=24"]),
]
INPUTS = InputSpec(image_size=32, num_classes=10)


@pytest.mark.parametrize("model, kwargs", FAMILIES)
def test_every_family_runs_stage_by_stage_into_timms_own_features(model, kwargs, one_thread):
    spec = create_model(f"timm:{model}", INPUTS, model_kwargs=kwargs)
    network = spec.build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        exits = list(network.iter_exits(x))
        reference = network.body.forward_features(x)
    assert spec.num_exits == 4 and [tuple(logits.shape) for logits, _ in exits] == [(2, 10)] * 4
    assert torch.allclose(exits[-1][1], reference, atol=1e-5)


def test_exits_are_placed_evenly_or_where_listed():
    vit = ["img_size=32", "patch_size=4", "depth=12", "embed_dim=48", "num_heads=2"]
    assert create_model("timm:vit_tiny_patch16_224", INPUTS, model_kwargs=vit).config.exits == (2, 5, 8, 11)
    assert create_model("timm:vit_tiny_patch16_224", INPUTS, model_kwargs=vit, num_exits=3).config.exits == (
        3,
        7,
        11,
    )
    assert create_model("timm:resnet18", INPUTS, model_kwargs=SMALL_RESNET, num_exits=2).config.exits == (
        1,
        3,
    )
    listed = create_model("timm:resnet18", INPUTS, model_kwargs=SMALL_RESNET, exit_after=[2, 4])
    assert listed.config.exits == (1, 3) and listed.num_exits == 2


@pytest.mark.parametrize(
    "arch, values, message",
    [
        ("timm:resnet18", {"num_exits": 5}, "--num-exits 5: timm:resnet18 has 4 places"),
        ("timm:resnet18", {"exit_after": [3, 2]}, "--exit-after must rise within 1..4"),
        ("timm:no_such_net", {}, "timm has no such model"),
        ("timm:vit_tiny_patch16_224", {}, "cannot build it for 32px"),
        ("timm:resnet18", {"model_kwargs": ["no_such_option=1"]}, "--model-kwargs: cannot build"),
    ],
)
def test_what_cannot_be_built_is_one_line_naming_the_flag(arch, values, message):
    with pytest.raises(ConfigError, match=message):
        create_model(arch, INPUTS, **values)


def test_model_kwargs_are_literals_or_text_never_evaluated():
    parsed = literal_kwargs(["img_size=32", "depths=(1,2)", "act_layer=gelu", "x=__import__('os')"])
    assert parsed == {"img_size": 32, "depths": (1, 2), "act_layer": "gelu", "x": "__import__('os')"}
    with pytest.raises(ValueError, match="key=value"):
        literal_kwargs(["32"])


def test_the_family_entry_claims_its_prefix_and_keeps_the_others():
    assert backbone("timm:resnet18").name == "timm:resnet18"
    assert backbone("msdnet").name == "msdnet"
    with pytest.raises(ConfigError, match="timm:NAME"):
        backbone("nope:resnet18")


def test_resnet50_counts_the_known_4_1_gmacs_at_224px(one_thread):
    spec = create_model("timm:resnet50", InputSpec(image_size=224, num_classes=1000))
    network = spec.build()
    macs = counted_operations(network, spec.inputs).macs
    heads = sum(head.linear.weight.numel() for head in network.heads)  # one multiply-add per weight
    assert macs == sorted(macs) and len(macs) == 4
    assert macs[-1] - heads == pytest.approx(4.09e9, rel=0.01)  # timm's table: 4.1 GMACs


def test_msdnet_counters_side_by_side(one_thread):
    spec = create_model("msdnet_ge", InputSpec(image_size=32, num_classes=100))
    network = spec.build()
    own, counted = spec.backbone.cost(network, spec.inputs), counted_operations(network, spec.inputs)
    assert own.params == counted.params
    for hooks, operations in zip(own.macs, counted.macs):  # the hooks add ReLU, pooling, biases
        assert 0.985 * hooks < operations < hooks


def saved_resnet(tmp_path: Path, suffix: str, **kwargs) -> tuple[Path, torch.nn.Module]:
    """A timm resnet18 (with its 1000-class classifier) saved as a state dict file."""
    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False, **kwargs).eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    return path, model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_give_the_same_backbone_features(tmp_path, suffix, one_thread):
    path, model = saved_resnet(tmp_path, suffix)
    spec = create_model("timm:resnet18", INPUTS, pretrained=str(path))
    network = spec.build().eval()
    spec.initialise(network)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(network.body.forward_features(x), model.forward_features(x))


def test_torchvision_weights_load_too(tmp_path, one_thread):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(4)
    reference = torchvision.models.resnet18(num_classes=1000).eval()
    path = tmp_path / "torchvision_resnet18.pth"
    torch.save(reference.state_dict(), path)
    spec = create_model("timm:resnet18", InputSpec(image_size=64, num_classes=10), pretrained=str(path))
    network = spec.build().eval()
    spec.initialise(network)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        assert torch.allclose(list(network.iter_exits(x))[-1][1], features, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda tmp: saved_resnet(tmp, ".pth", in_chans=1)[0],
            r"conv1.weight has shape \(64, 1, 7, 7\), the model's \(64, 3, 7, 7\)",
        ),
        (lambda tmp: tmp / "missing.pth", "no file .*missing.pth"),
        (
            lambda tmp: (tmp / "junk.safetensors").write_text("junk") and tmp / "junk.safetensors",
            "cannot read",
        ),
    ],
)
def test_a_file_that_does_not_fit_is_one_line(tmp_path, make, message):
    spec = create_model("timm:resnet18", INPUTS, pretrained=str(make(tmp_path)))
    with pytest.raises(UserError, match=message) as error:
        load_pretrained(spec.build(), spec.config)
    assert "\n" not in str(error.value)


def test_a_misfit_file_stops_training_with_exit_status_2(tmp_path, capsys):
    from utils.errors import run_cli

    path, _ = saved_resnet(tmp_path, ".pth", in_chans=1)
    with pytest.raises(SystemExit) as stop:
        run_cli(
            train_cifar100.main,
            [*TRAIN_RESNET, "--pretrained", str(path), "--result_dir", str(tmp_path / "r")],
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "conv1.weight" in lines[0]


def test_a_frozen_backbone_stays_unchanged_while_the_heads_move(tmp_path, one_thread):
    path, model = saved_resnet(tmp_path, ".safetensors")
    run = tmp_path / "frozen"
    flags = ["--arch", "timm:resnet18", "--pretrained", str(path), "--freeze-backbone"]
    train_cifar100.main([*COMMON, *flags, "--epochs", "1", "--result_dir", str(run)])
    trained = torch.load(run / "model_latest.pth", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(trained[f"body.{key}"], value), key  # weights and BN statistics
    spec = create_model("timm:resnet18", InputSpec(32, 10))
    torch.manual_seed(1)  # as the run seeds before it builds: the heads before any step
    fresh = spec.build().state_dict()
    for n in range(4):
        assert not torch.equal(trained[f"heads.{n}.linear.weight"], fresh[f"heads.{n}.linear.weight"])


COMMON = [
    "--dataset",
    "digits",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--batch-size",
    "64",
    "--lr",
    "0.05",
    "--max-steps-per-epoch",
    "4",
    "--use-valid",
    "--seed",
    "1",
]
TRAIN_RESNET = [*COMMON, "--arch", "timm:resnet18", "--model-kwargs", *SMALL_RESNET]
TRAIN_VIT = [*COMMON, "--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", *SMALL_VIT]


@pytest.fixture(scope="module", params=[("resnet", TRAIN_RESNET), ("vit", TRAIN_VIT)], ids=["resnet", "vit"])
def trained_run(request, tmp_path_factory) -> tuple[Path, list[str]]:
    """Boosted: one epoch, resumed to two; through train_cifar100.py's main."""
    name, flags = request.param
    run = tmp_path_factory.mktemp(name) / "run"
    train_cifar100.main([*flags, "--epochs", "1", "--result_dir", str(run)])
    train_cifar100.main([*flags, "--epochs", "2", "--result_dir", str(run), "--resume"])
    return run, flags


def test_training_and_resume_record_the_timm_model(trained_run):
    run, flags = trained_run
    config = json.loads((run / "config.json").read_text())
    assert (
        config["arch"] == flags[flags.index("--arch") + 1]
        and config["model_kwargs"] == flags[-len(config["model_kwargs"]) :]
    )
    assert torch.load(run / "model_latest.pth", weights_only=True)["epoch"] == 2


def test_resume_refuses_other_model_kwargs(trained_run):
    run, flags = trained_run
    with pytest.raises(UserError, match="model_kwargs"):
        train_cifar100.main([*flags[:-1], "--epochs", "3", "--result_dir", str(run), "--resume"])


def test_the_joint_objective_trains_too(tmp_path):
    run = tmp_path / "joint"
    train_cifar100.main([*TRAIN_VIT, "--loss", "joint", "--epochs", "1", "--result_dir", str(run)])
    assert json.loads((run / "config.json").read_text())["loss"] == "joint"


def test_op_counter_prints_rising_per_exit_macs(trained_run, capsys):
    op_counter.main(["--run-dir", str(trained_run[0]), "--json"])
    macs = json.loads(capsys.readouterr().out)["macs"]
    assert len(macs) == 4 and macs[0] < macs[1] < macs[2] < macs[3]


def test_both_modes_a_budget_and_real_early_exit_agree_with_the_simulation(trained_run, capsys, one_thread):
    run, _ = trained_run
    op_counter.main(["--run-dir", str(run), "--json"])
    macs = json.loads(capsys.readouterr().out)["macs"]
    logits = run / "logits.npz"
    eval_cifar100.main(
        [
            "--evaluate-from",
            str(run),
            "--evalmode",
            "both",
            "--budget",
            str((macs[0] + macs[-1]) / 2),
            "--real-exit",
            "--eval-batch-size",
            "64",
            "--save-logits",
            str(logits),
        ]
    )
    anytime = json.loads((run / "anytime.json").read_text())
    budget = json.loads((run / "budget.json").read_text())
    real = json.loads((run / "real_exit.json").read_text())
    assert len(anytime["exits"]) == 4 and budget["val_expected_cost"] <= budget["budget"]
    assert real["exit_counts"] == real["simulated_exit_counts"]
    assert real["accuracy"] == real["simulated_accuracy"]
    assert logits.is_file()


def test_op_counter_takes_an_explicit_exit_list(capsys):
    op_counter.main(
        ["--dataset", "digits", "--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", *SMALL_VIT]
    )
    capsys.readouterr()
    op_counter.main(
        ["--dataset", "digits", "--arch", "timm:vit_tiny_patch16_224", "--model-kwargs", *SMALL_VIT]
        + ["--exit-after", "1,4", "--json"]
    )
    macs = json.loads(capsys.readouterr().out)["macs"]
    assert len(macs) == 2 and macs[0] < macs[1]


def test_a_model_kwarg_without_a_key_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        op_counter.main(["--arch", "timm:resnet18", "--model-kwargs", "32"])
    assert stop.value.code == 2 and "expected key=value, got '32'" in capsys.readouterr().err


def test_a_timm_run_exports_to_onnx_stages_that_reproduce_every_exit(trained_run, tmp_path, one_thread):
    """Deployment (docs/deployment.md) works for timm backbones too: the exported stages of the
    ResNet and the ViT give the network's own per-exit outputs."""
    from args import parse_evaluation_args
    from boostnet.deployment.export import load_export
    from boostnet.deployment.runner import stage_outputs
    from boostnet.evaluation.loading import load_run
    from scripts.export import main as export_main

    run, _ = trained_run
    eval_cifar100.main(["--evaluate-from", str(run), "--evalmode", "dynamic", "--workers", "0"])
    export_main([str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")])
    network = load_run(parse_evaluation_args(["--evaluate-from", str(run), "--device", "cpu"])).network
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = torch.stack(network(images))
    exported = torch.from_numpy(np.stack(stage_outputs(load_export(tmp_path / "onnx").backend, images)))
    error = ((exported - reference).abs().amax(dim=2) / reference.abs().amax(dim=2)).max().item()
    assert exported.shape == reference.shape and error <= 1e-4
