"""MSDNet recipes build and run; gradient rescaling carries the factors of
docs/architectures.md#gradient-rescaling-msdnet-ge; up-to-k is lazy."""

from __future__ import annotations

import pytest
import torch

from args import parse_args
from tests.conftest import TINY_MSDNET

C100 = ["--arch", "msdnet_ge", "--stepmode", "even", "--step", "2", "--base", "4", "--nChannels", "16"]
IMAGENET = [
    "--dataset",
    "imagenet",
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "5",
    "--stepmode",
    "even",
    "--nChannels",
    "32",
    "--growthRate",
    "16",
    "--grFactor",
    "1-2-4-4",
    "--bnFactor",
    "1-2-4-4",
]


@pytest.mark.parametrize(
    "argv, exits, size, classes",
    [
        (C100 + ["--nBlocks", "10"], 10, 32, 100),
        (C100 + ["--nBlocks", "6", "--use-valid"], 6, 32, 100),
        (IMAGENET + ["--step", "7", "--base", "7"], 5, 224, 1000),
        (IMAGENET + ["--step", "5", "--base", "5"], 5, 224, 1000),
    ],
)
def test_recipe_models_forward(argv, exits, size, classes):
    model = parse_args(argv).model.build().eval()
    batch = 2 if size == 32 else 1
    with torch.no_grad():
        logits = model(torch.randn(batch, 3, size, size))
    assert len(logits) == model.num_exits == exits
    assert all(out.shape == (batch, classes) for out in logits)


def _gradients_around_exit(model, block: int, pick_loss) -> dict[str, list[torch.Tensor]]:
    """Gradients of `pick_loss(logits)` at block `block`'s output maps, at head `block`'s input,
    and at the maps entering block `block + 1` (the trunk)."""
    taps: dict[str, list[torch.Tensor]] = {}

    def tap(name, tensors):
        taps[name] = [t.retain_grad() or t for t in tensors]

    hooks = [
        model.blocks[block].register_forward_hook(lambda _m, _i, out: tap("block", out)),
        model.heads[block].register_forward_pre_hook(lambda _m, inp: tap("head", inp)),
        model.blocks[block + 1].register_forward_pre_hook(lambda _m, inp: tap("trunk", inp[0])),
    ]
    logits = model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    for h in hooks:
        h.remove()
    pick_loss(logits).backward()
    return {
        name: [torch.zeros_like(t) if t.grad is None else t.grad for t in tensors]
        for name, tensors in taps.items()
    }


@pytest.mark.parametrize("arch", ["msdnet_ge", "msdnet"])
@pytest.mark.parametrize("block", [0, 1])
def test_gradient_rescaling_factors(arch, block):
    torch.manual_seed(0)
    model = parse_args(TINY_MSDNET + ["--arch", arch]).model.build().eval()
    n = model.num_exits
    rescaled = arch == "msdnet_ge"
    from_head = _gradients_around_exit(model, block, lambda logits: logits[block].sum())
    head_factor = 1 / (n - block) if rescaled else 1.0
    torch.testing.assert_close(from_head["block"][-1], from_head["head"][0] * head_factor)
    from_later = _gradients_around_exit(
        model, block, lambda logits: sum(out.sum() for out in logits[block + 1 :])
    )
    trunk_factor = (n - block - 1) / (n - block) if rescaled else 1.0
    assert from_later["trunk"][-1].abs().sum() > 0
    torch.testing.assert_close(from_later["block"][-1], from_later["trunk"][-1] * trunk_factor)
    for block_map, trunk_map in zip(from_later["block"][:-1], from_later["trunk"][:-1]):
        torch.testing.assert_close(block_map, trunk_map)  # finer scales are never rescaled


def test_forward_identical_with_and_without_rescaling():
    torch.manual_seed(0)
    ge = parse_args(TINY_MSDNET).model.build().eval()
    plain = parse_args(TINY_MSDNET + ["--arch", "msdnet"]).model.build().eval()
    plain.load_state_dict(ge.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(ge(x), plain(x)):
        torch.testing.assert_close(a, b)


def test_up_to_exit_k_runs_no_later_module():
    model = parse_args(TINY_MSDNET).model.build().eval()
    calls: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o, name=name: calls.__setitem__(name, 1))
        for name, m in model.named_modules()
        if name
    ]
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32), max_exit=2)
    for h in hooks:
        h.remove()
    assert len(logits) == 2
    assert any(name.startswith("blocks.1") for name in calls)
    assert not any(name.startswith(("blocks.2", "heads.2")) for name in calls)


def test_iter_exits_can_stop_early():
    model = parse_args(TINY_MSDNET).model.build().eval()
    with torch.no_grad():
        first_logits, features = next(model.iter_exits(torch.randn(3, 3, 32, 32)))
    assert first_logits.shape == (3, 100)
    assert isinstance(features, list) and features[0].shape[0] == 3
