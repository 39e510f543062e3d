"""On a GPU: real early exit syncs at most once per exit; its CUDA graphs change no exit (issue 5)."""

from __future__ import annotations

import warnings

import pytest
import torch

from args import parse_args
from boostnet.evaluation.early_exit import GraphedExitStages, early_exit_predict, exit_stage
from tests.conftest import TINY_MSDNET
from tests.run_fixtures import network_of


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


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_cuda_case():
    """A tiny boosted MSDNet on the GPU, 64 random images and per-exit median-confidence thresholds."""
    torch.manual_seed(0)
    job = parse_args(TINY_MSDNET + ["--dataset", "digits"])
    model = job.model.build().cuda().eval()
    images = torch.randn(64, 3, 32, 32, device="cuda")
    network = network_of(job, model)
    with torch.no_grad():
        outputs = network(images)
    thresholds = [torch.softmax(o, 1).max(1).values.median().item() for o in outputs]
    return network, images, thresholds


@needs_cuda
def test_early_exit_synchronises_at_most_once_per_exit():
    network, images, thresholds = tiny_cuda_case()
    syncs = count_synchronisations(lambda: early_exit_predict(network, images, thresholds))
    assert 1 <= syncs <= network.num_exits - 1


@needs_cuda
@pytest.mark.parametrize("batch", [1, 8])
def test_graphed_exit_stages_give_the_eager_exits(batch):
    network, images, thresholds = tiny_cuda_case()
    stages = GraphedExitStages(exit_stage(network), batch, images.device)

    def run(stage):
        results = [early_exit_predict(network, chunk, thresholds, stage) for chunk in images.split(batch)]
        return (torch.cat([r.exit_index for r in results]), torch.cat([r.predictions for r in results]))

    eager = run(None)
    captured, replayed = run(stages), run(stages)

    assert set(stages.graphs) == set(range(network.num_exits)) if batch == 1 else 0 in stages.graphs
    for graphed in (captured, replayed):
        assert torch.equal(graphed[0], eager[0]) and torch.equal(graphed[1], eager[1])
