"""On a GPU, real early exit synchronises with the host at most once per exit (issue 5)."""
from __future__ import annotations

import warnings

import pytest
import torch

from args import parse_args
from models import build_model
from models.boosting import build_objective
from tests.conftest import TINY_MSDNET
from utils.early_exit import early_exit_predict


def count_synchronisations(run) -> int:
    """How many synchronising CUDA calls `run()` makes (torch's sync debug mode warns on each)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_early_exit_synchronises_at_most_once_per_exit():
    torch.manual_seed(0)
    args = parse_args(TINY_MSDNET + ["--dataset", "digits"])
    model = build_model(args).cuda().eval()
    images = torch.randn(64, 3, 32, 32, device="cuda")
    objective = build_objective(args, model.num_exits)
    with torch.no_grad():
        outputs = objective.outputs(model(images))
    thresholds = [torch.softmax(o, 1).max(1).values.median().item() for o in outputs]
    syncs = count_synchronisations(
        lambda: early_exit_predict(model, images, thresholds, objective.factors))
    assert 1 <= syncs <= model.num_exits - 1
