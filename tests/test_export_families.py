"""Every kind of network exports (docs/deployment.md): RANet, a joint (not boosted) MSDNet and timm
CNN and ViT backbones, to ONNX and torch.export, and the loaded stages reproduce every exit's
output. tests/test_deployment.py follows one boosted MSDNet through training, policy and predict;
here each family gets random weights, which is all the stages' agreement needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from args import parse_args
from boostnet.data.datasets import DATASETS
from boostnet.deployment.export import export_run, load_export
from boostnet.deployment.runner import stage_outputs
from boostnet.evaluation.policy import ExitPolicy, runless_policy
from models.boosting import BoostedNetwork
from tests.conftest import TINY_MSDNET, TINY_RANET
from tests.run_fixtures import network_of

RELATIVE_TOLERANCE = 1e-4
FAMILIES = {
    "ranet": TINY_RANET,
    "msdnet_joint": [*TINY_MSDNET, "--loss", "joint"],
    "timm_resnet": ["--arch", "timm:resnet18", "--model-kwargs", "channels=(8,16,32,64)", "stem_width=8"],
    "timm_vit": [
        "--arch",
        "timm:vit_tiny_patch16_224",
        "--model-kwargs",
        *["img_size=32", "patch_size=4", "depth=4", "embed_dim=48", "num_heads=2"],
    ],
}


def random_network(flags: list[str]) -> tuple[BoostedNetwork, ExitPolicy]:
    """The family's network on digits (32x32, 10 classes) with seeded random weights, in eval mode,
    and an exit policy for it without levels (export needs its input shape and costs)."""
    torch.manual_seed(0)
    job = parse_args(["--dataset", "digits", *flags])
    network = network_of(job, job.model.build()).eval()
    return network, runless_policy([n + 1 for n in range(network.num_exits)], DATASETS["digits"])


@pytest.mark.parametrize("form", ["onnx", "torch-export"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_exports_and_its_stages_reproduce_every_exit(family, form, tmp_path, one_thread, capsys):
    network, policy = random_network(FAMILIES[family])
    export_run(network, policy, 3, form, tmp_path / "export")
    assert capsys.readouterr().out == ""  # the exporters' progress chatter is silenced
    export = load_export(tmp_path / "export")
    assert export.backend.boosted == network.boosted and export.backend.num_exits == network.num_exits
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = torch.stack(network(images))
    outputs = torch.from_numpy(np.stack(stage_outputs(export.backend, images.numpy())))
    error = ((outputs - reference).abs().amax(dim=2) / reference.abs().amax(dim=2)).max().item()
    assert error <= RELATIVE_TOLERANCE
