"""RANet (docs/architectures.md#ranet): published costs, recipe forwards, stage boundaries and
initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from args import parse_args
from models.multi_exit import select_samples
from models.ranet import RANetConfig
from tests.conftest import TINY_RANET

RANET_C100 = [
    "--arch",
    "ranet",
    "--nBlocks",
    "2",
    "--stepmode",
    "even",
    "--step",
    "4",
    "--nChannels",
    "16",
    "--scale-list",
    "1-2-3-3",
    "--grFactor",
    "4-2-1-1",
    "--bnFactor",
    "4-2-1-1",
]
RANET_C100_BUDGETED = [
    [
        "--arch",
        "ranet",
        "--nBlocks",
        "2",
        "--stepmode",
        "lin_grow",
        "--step",
        "2",
        "--nChannels",
        "16",
        "--scale-list",
        scales,
        "--grFactor",
        factors,
        "--bnFactor",
        factors,
        "--use-valid",
    ]
    for scales, factors in (("1-2-3", "4-2-1"), ("1-2-2-3", "4-2-2-1"), ("1-2-3-3", "4-2-1-1"))
]
RANET_IMAGENET = [
    "--dataset",
    "imagenet",
    "--arch",
    "ranet",
    "--nBlocks",
    "2",
    "--step",
    "8",
    "--stepmode",
    "even",
    "--growthRate",
    "16",
    "--scale-list",
    "1-2-3-4",
    "--grFactor",
    "4-2-2-1",
    "--bnFactor",
    "4-2-2-1",
]


def leaf_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if next(m.children(), None) is None]


def stage_leaves(model, stages: range) -> set[int]:
    """ids of the leaf modules that `stage_modules` assigns to `stages`."""
    return {id(leaf) for n in stages for m in model.stage_modules(n) for leaf in leaf_modules(m)}


def test_ranet_cifar100_golden():
    spec = parse_args(RANET_C100).model
    costs = spec.backbone.cost(spec.build(), spec.inputs)
    assert costs.macs == [15826020, 31306440, 44690220, 50404752, 60712628, 63717656, 90255228, 94997472]
    assert costs.params == [482052, 1097000, 1511586, 1914854, 2223662, 2523154, 2952906, 3354710]
    # Flow 0 has no fusion, later flows resize: only the "true" count charges interpolation.
    assert costs.true_macs[:2] == costs.macs[:2]
    assert all(true > plain for true, plain in zip(costs.true_macs[2:], costs.macs[2:]))


@pytest.mark.parametrize(
    "argv",
    [RANET_C100] + RANET_C100_BUDGETED,
    ids=["anytime", "budgeted-1-2-3", "budgeted-1-2-2-3", "budgeted-1-2-3-3"],
)
def test_cifar_recipes_forward(argv):
    job = parse_args(argv)
    model = job.model.build()
    logits = model(torch.randn(2, 3, 32, 32))
    assert model.num_exits == job.model.num_exits == len(logits)
    assert all(out.shape == (2, 100) for out in logits)


@pytest.mark.parametrize("channels", ["64", "32"])
def test_imagenet_recipes_forward(channels):
    job = parse_args(RANET_IMAGENET + ["--nChannels", channels])
    model = job.model.build().eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    assert len(logits) == job.model.num_exits == 8
    assert all(out.shape == (1, 1000) for out in logits)


def test_down_sampling_blocks_follow_the_spec_example():
    cfg = parse_args(RANET_C100).model.build().cfg
    downs = [
        {j for j in range(1, cfg.fusion_blocks(k) + 1) if cfg.is_down_block(k, j)}
        for k in range(cfg.num_flows)
    ]
    assert downs == [set(), {2}, {2, 4}, {4, 6}]


def test_every_normal_block_runs_at_the_lowest_resolution():
    model = parse_args(RANET_C100).model.build().eval()
    with torch.no_grad():
        sizes = [tuple(feats["x"].shape[-2:]) for _, feats in model.iter_exits(torch.randn(1, 3, 32, 32))]
    assert sizes == [(8, 8)] * 8


@pytest.mark.parametrize("max_exit", [1, 2, 3, 4])
def test_max_exit_runs_exactly_the_earlier_stages(max_exit):
    model = parse_args(TINY_RANET).model.build().eval()
    assert model.num_exits == 4
    ran: set[int] = set()
    handles = [leaf.register_forward_hook(lambda m, i, o: ran.add(id(m))) for leaf in leaf_modules(model)]
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32), max_exit=max_exit)
    for handle in handles:
        handle.remove()
    assert len(logits) == max_exit
    assert not ran & stage_leaves(model, range(max_exit, model.num_exits))
    assert ran == stage_leaves(model, range(max_exit))


def test_stage_modules_partition_the_parameters():
    model = parse_args(TINY_RANET).model.build()
    per_stage = [
        {id(p) for m in model.stage_modules(n) for p in m.parameters()} for n in range(model.num_exits)
    ]
    assert all(per_stage)
    assert sum(len(s) for s in per_stage) == len(set().union(*per_stage))
    assert set().union(*per_stage) == {id(p) for p in model.parameters()}


def test_samples_can_be_dropped_between_exits():
    torch.manual_seed(0)
    model = parse_args(TINY_RANET).model.build().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        feats = model.advance(0, model.stem(x))
        kept = select_samples(feats, torch.tensor([0, 2]))
        for n in range(1, model.num_exits):
            kept = model.advance(n, kept)
            torch.testing.assert_close(model.classify(n, kept), full[n][[0, 2]])


def test_flows_and_heads_use_ranet_init_but_the_stem_keeps_the_default():
    torch.manual_seed(0)
    model = parse_args(RANET_C100).model.build()
    flow_conv = model.flows[0][0].layers[0].same[1][0]
    out_channels, kernel = flow_conv.out_channels, flow_conv.kernel_size[0]
    expected_std = math.sqrt(2 / (kernel * kernel * out_channels))
    assert flow_conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert all(torch.all(head.linear.bias == 0) for head in model.heads)
    for conv in (m for m in model.stem_layer.modules() if isinstance(m, nn.Conv2d)):
        default_bound = 1 / math.sqrt(conv.weight[0].numel())  # PyTorch's kaiming_uniform(a=√5)
        assert conv.weight.abs().max().item() <= default_bound


def test_config_counts_blocks_and_exits():
    cfg = RANetConfig(
        nBlocks=3,
        block_step=1,
        step=2,
        stepmode="lin_grow",
        nChannels=4,
        growthRate=4,
        grFactor=(2, 1, 1),
        bnFactor=(2, 1, 1),
        scale_list=(1, 2, 2),
    )
    assert [cfg.flow_blocks(k) for k in range(3)] == [3, 4, 5]
    assert [cfg.block_layers(j) for j in (1, 2, 3)] == [2, 4, 6]
    assert [j for j in range(1, 6) if cfg.has_transition(2, j)] == [2]
