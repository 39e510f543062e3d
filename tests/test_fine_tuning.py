"""The fine-tuning knobs (docs/fine-tuning.md): AdamW, cosine with warm-up, label smoothing, weight
EMA, bf16 autocast on the CPU; each against a hand computation on a tiny case, resumed bit-exactly,
and absent by default."""

from __future__ import annotations

import csv
import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from args import parse_args
from boostnet.data.loaders import build_splits
from boostnet.training.ema import WeightEMA
from boostnet.training.optim import build_optimizer, build_scheduler, lr_factor, schedule_text, scheduled_lr
from boostnet.training.settings import TrainSettings
from boostnet.training.step import make_forward, resolve_step_mode
from eval_cifar100 import main as evaluation_main
from models.objectives import objective
from tests.conftest import TINY_MSDNET
from tests.run_fixtures import network_of
from tests.test_run_safety import FLAGS, metric_rows, signal_at_step
from tests.test_training import SHORT, assert_one_line_error, load, train
from utils.errors import EXIT_PREEMPTED, UserError, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

COSINE = TrainSettings(epochs=6, lr=0.5, sched="cosine", warmup_epochs=2)


class TwoGroups(nn.Module):
    """A stand-in with two 'exits' of one weight each, for optimiser arithmetic."""

    num_exits = 2

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 1, bias=False)
        self.second = nn.Linear(3, 1, bias=False)

    def stage_modules(self, n: int) -> list[nn.Module]:
        return [self.first, self.second][n : n + 1]


EVAL = ["--workers", "0", "--device", "cpu"]


def evaluate_main(*argv: str) -> int:
    """Run eval_cifar100.py in this process; returns the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluation_main, list(argv))
    return exit_info.value.code


def summary_lrs(run: Path) -> list[float]:
    """The lr column of summary.csv."""
    with open(run / "summary.csv") as handle:
        return [float(row["lr"]) for row in csv.DictReader(handle)]


def test_cosine_with_warmup_follows_the_formula_at_chosen_epochs():
    # W = 2 warm-up epochs at lr/3, 2 lr/3; then (1 + cos(pi (e - 2) / 4)) / 2 over epochs 2..5
    expected = {0: 1 / 3, 1: 2 / 3, 2: 1.0, 3: (1 + math.sqrt(0.5)) / 2, 4: 0.5, 5: (1 - math.sqrt(0.5)) / 2}
    for epoch, factor in expected.items():
        assert lr_factor(COSINE, epoch) == pytest.approx(factor, rel=1e-15)
        assert scheduled_lr(COSINE, epoch) == pytest.approx(0.5 * factor, rel=1e-15)
    assert schedule_text(COSINE) == (
        "lr 0.5, cosine to 0 over epochs 3-6, after 2 warm-up epochs (linear from lr/3)"
    )


def test_the_scheduler_sets_the_formula_each_epoch_and_resumes_in_place():
    model = TwoGroups()
    optimizer = build_optimizer(model, COSINE, True, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, COSINE)
    for epoch in range(COSINE.epochs):
        wanted = torch.tensor(0.5, dtype=torch.float32) * lr_factor(COSINE, epoch)
        for group in optimizer.param_groups:
            assert torch.equal(group["lr"], wanted), epoch
        if epoch == 3:
            saved = scheduler.state_dict()
        optimizer.step()
        scheduler.step()
    fresh = build_optimizer(TwoGroups(), COSINE, True, torch.device("cpu"))
    restored = build_scheduler(fresh, COSINE)
    restored.load_state_dict(saved)
    restored.step()  # after epoch 3, as the run that saved it did
    assert float(fresh.param_groups[0]["lr"]) == pytest.approx(scheduled_lr(COSINE, 4), rel=1e-6)


def test_warmup_multiplies_the_step_schedule():
    train = TrainSettings(epochs=6, lr=0.1, lr_milestones=(3,), lr_gamma=0.1, warmup_epochs=1)
    assert [lr_factor(train, e) for e in range(5)] == pytest.approx([0.5, 1, 1, 0.1, 0.1])
    assert schedule_text(train) == "lr 0.1, x0.1 after epoch 3, after 1 warm-up epoch (linear from lr/2)"


def test_adamw_step_is_the_hand_computed_update_over_the_weight_decay_groups():
    """First AdamW step: m = g, v = g^2 after bias correction, so w <- w (1 - lr wd) - lr g / (|g| + eps)."""
    train = TrainSettings(lr=0.01, opt="adamw", weight_decay=(0.1, 0.3))
    model = TwoGroups()
    optimizer = build_optimizer(model, train, True, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["weight_decay"] for group in optimizer.param_groups] == pytest.approx([0.1, 0.3])
    before = [p.detach().clone() for p in (model.first.weight, model.second.weight)]
    gradients = [torch.tensor([[0.5, -2.0, 1e-3]]), torch.tensor([[-1.0, 4.0, 0.25]])]
    for parameter, gradient in zip((model.first.weight, model.second.weight), gradients):
        parameter.grad = gradient.clone()
    optimizer.step()
    for parameter, weight, gradient, decay in zip(
        (model.first.weight, model.second.weight), before, gradients, (0.1, 0.3)
    ):
        expected = weight * (1 - 0.01 * decay) - 0.01 * gradient / (gradient.abs() + 1e-8)
        torch.testing.assert_close(parameter.detach(), expected, rtol=1e-6, atol=1e-7)
        state = optimizer.state[parameter]
        assert {"exp_avg", "exp_avg_sq", "step"} <= set(state)


def test_adamw_run_saves_adam_state_and_the_cosine_lrs(tmp_path):
    run = tmp_path / "run"
    flags = [*TINY_MSDNET, *SHORT, "--opt", "adamw", "--lr", "0.002", "--sched", "cosine"]
    assert train(*flags, "--warmup-epochs", "1", "--epochs", "3", "--result_dir", str(run)) == 0
    checkpoint = load(run / "model_latest.pth")
    states = list(checkpoint["optimizer"]["state"].values())
    assert states and all({"exp_avg", "exp_avg_sq"} <= set(state) for state in states)
    job = parse_args([*flags, "--warmup-epochs", "1", "--epochs", "3"])
    assert summary_lrs(run) == pytest.approx([scheduled_lr(job.train, e) for e in range(3)], rel=1e-12)
    assert summary_lrs(run) == pytest.approx([0.001, 0.002, 0.001])
    assert "AdamW, lr 0.002, cosine to 0 over epochs 2-3" in (run / "log.txt").read_text()


def test_adamw_in_a_cuda_graph_is_refused_naming_the_flags():
    for flags in (["--cuda-graph"], ["--compile"]):
        job = parse_args([*TINY_MSDNET, "--opt", "adamw", *flags])
        with pytest.raises(UserError, match=f"--opt adamw .*{flags[0]}"):
            resolve_step_mode(job.speed, torch.device("cuda"), 1, job.train.opt)
    job = parse_args([*TINY_MSDNET, "--opt", "adamw", "--compile"])
    assert resolve_step_mode(job.speed, torch.device("cpu"), 1, job.train.opt) == "compile"


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--sched", "cosine", "--lr_milestones", "2"], ("--lr_milestones", "--sched cosine")),
        (["--warmup-epochs", "3", "--epochs", "3"], ("--warmup-epochs 3",)),
        (["--opt", "adam"], ("--opt",)),
        (["--model-ema-decay", "1"], ("--model-ema-decay", "(0, 1)")),
    ],
)
def test_bad_fine_tuning_flags_are_one_line_errors(flags, fragments, tmp_path, capsys):
    assert train(*TINY_MSDNET, *SHORT, *flags, "--result_dir", str(tmp_path / "run")) == 2
    assert_one_line_error(capsys, *fragments)
    assert not (tmp_path / "run").exists()


def test_a_cosine_run_may_not_grow_its_epochs_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--sched", "cosine", "--epochs", "1", "--result_dir", str(run)) == 0
    assert train("--result_dir", str(run), "--resume", "--epochs", "2") == 2
    assert_one_line_error(capsys, "--sched cosine", "1 epochs")


@pytest.mark.parametrize("loss", ["boost", "joint"])
def test_smoothing_is_the_hand_computed_smoothed_cross_entropy_in_both_objectives(loss):
    """K = 3 classes, eps = 0.3: loss = (1 - eps)(-log p_y) + eps/K * sum_k -log p_k."""
    logits = [torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]])]
    target = torch.tensor([0])
    job = parse_args([*TINY_MSDNET, "--loss", loss, "--smoothing", "0.3"])
    assert job.objective.smoothing == 0.3
    smoothed = objective(loss).loss(job.objective, 2)
    total, per_exit = smoothed(logits, target)
    for value, row in zip(per_exit, logits):
        minus_log_p = [
            -math.log(math.exp(z) / sum(math.exp(v) for v in row[0].tolist())) for z in row[0].tolist()
        ]
        assert float(value) == pytest.approx(0.7 * minus_log_p[0] + 0.1 * sum(minus_log_p), rel=1e-6)
    assert float(total) == pytest.approx(float(per_exit.sum()), rel=1e-6)
    plain = objective(loss).loss(parse_args([*TINY_MSDNET, "--loss", loss]).objective, 2)
    _, unsmoothed = plain(logits, target)
    assert all(torch.equal(u, F.cross_entropy(z, target)) for u, z in zip(unsmoothed, logits))
    assert not torch.equal(unsmoothed, per_exit)


def test_weight_ema_follows_the_formula_and_copies_integer_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, 0.75)
    expected = {key: value.clone() for key, value in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        model.train()(torch.randn(5, 3))  # moves BatchNorm's statistics and counter
        ema.update(model)
        for key, live in model.state_dict().items():
            if live.is_floating_point():
                expected[key] = 0.75 * expected[key] + 0.25 * live
            else:
                expected[key] = live.clone()
    averaged = ema.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-6, atol=1e-7)
    assert int(averaged["1.num_batches_tracked"]) == 3
    assert not torch.allclose(averaged["0.weight"], model.state_dict()["0.weight"])
    assert not any(p.requires_grad for p in ema.module.parameters())


ALL_KNOBS = [
    *TINY_MSDNET,
    *SHORT,
    "--use-valid",
    "--opt",
    "adamw",
    "--lr",
    "0.003",
    "--sched",
    "cosine",
    "--warmup-epochs",
    "1",
    "--smoothing",
    "0.1",
    "--model-ema",
    "--model-ema-decay",
    "0.9",
    "--epochs",
    "3",
]


def assert_same_state(expected: dict, found: dict) -> None:
    """Every tensor of weights, EMA, objective, optimiser and scheduler state equal."""
    for part in ("model", "model_ema", "objective"):
        assert expected[part].keys() == found[part].keys()
        for key, value in expected[part].items():
            assert torch.equal(value, found[part][key]), f"{part} {key}"
    for state, found_state in zip(
        expected["optimizer"]["state"].values(), found["optimizer"]["state"].values()
    ):
        assert state.keys() == found_state.keys()
        assert all(torch.equal(state[key], found_state[key]) for key in state)
    assert expected["scheduler"]["last_epoch"] == found["scheduler"]["last_epoch"] == 3


def test_every_knob_on_resumes_bit_exactly_after_a_mid_epoch_stop(tmp_path, capsys, monkeypatch):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert train(*ALL_KNOBS, "--result_dir", str(straight)) == 0
    with monkeypatch.context() as patch:
        signal_at_step(patch, signal.SIGTERM, 5 + 3)  # epoch 2 (5 steps each), step 3
        assert train(*ALL_KNOBS, "--result_dir", str(stopped)) == EXIT_PREEMPTED
    assert "model_ema" in load(stopped / "model_recovery.pth")
    assert train(*ALL_KNOBS, "--result_dir", str(stopped), "--resume") == 0
    expected = load(straight / "model_latest.pth")
    assert_same_state(expected, load(stopped / "model_latest.pth"))
    assert metric_rows(stopped) == metric_rows(straight)
    assert not all(torch.equal(expected["model"][k], expected["model_ema"][k]) for k in expected["model"])
    log = (straight / "log.txt").read_text()
    assert "weight EMA, decay 0.9 per step" in log and "AdamW, lr 0.003, cosine" in log


def exit_outputs(run: Path, state: dict) -> torch.Tensor:
    """Every exit's evaluation-time outputs (exits x samples x classes) of the run's network with
    `state`, on the digits test set."""
    job = parse_args(["--result_dir", str(run), "--resume"])
    model = job.model.build()
    model.load_state_dict(state)
    test_set = build_splits(job.data, job.train.use_valid, job.train.seed, None).test
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    with torch.no_grad():
        return torch.stack(network_of(job, model.eval())(images))


def dumped(run: Path, *flags: str) -> tuple[str, torch.Tensor]:
    """Evaluate the run (anytime, --save-logits): the header's `weights` and the dumped outputs."""
    dump = run / "outputs.npz"
    assert (
        evaluate_main(
            *EVAL, "--evaluate-from", str(run), "--evalmode", "anytime", "--save-logits", str(dump), *flags
        )
        == 0
    )
    return json.loads((run / "anytime.json").read_text())["weights"], torch.from_numpy(
        np.load(dump)["logits"]
    )


def test_evaluation_reads_the_ema_weights_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    flags = [*FLAGS, "--model-ema", "--model-ema-decay", "0.5", "--epochs", "2", "--result_dir", str(run)]
    assert train(*flags) == 0
    checkpoint = load(run / "model_best.pth")
    ema, live = exit_outputs(run, checkpoint["model_ema"]), exit_outputs(run, checkpoint["model"])
    assert (ema - live).abs().max() > 1e-3
    weights, outputs = dumped(run)
    assert "its --model-ema average" in capsys.readouterr().out
    assert weights == "ema"
    torch.testing.assert_close(outputs, ema, rtol=1e-5, atol=1e-5)
    weights, outputs = dumped(run, "--no-eval-ema")
    assert weights == "live"
    torch.testing.assert_close(outputs, live, rtol=1e-5, atol=1e-5)


def test_eval_ema_on_a_run_without_ema_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 0
    assert "model_ema" not in load(run / "model_latest.pth")
    assert evaluate_main(*EVAL, "--evaluate-from", str(run), "--evalmode", "anytime", "--eval-ema") == 2
    assert_one_line_error(capsys, "--eval-ema", "no EMA weights")
    assert evaluate_main(*EVAL, "--evaluate-from", str(run), "--evalmode", "anytime") == 0
    assert json.loads((run / "anytime.json").read_text())["weights"] == "live"


def test_bf16_autocast_trains_validates_and_evaluates_on_the_cpu(tmp_path):
    job = parse_args([*TINY_MSDNET, "--amp", "bf16"])
    model = job.model.build()
    forward_dtypes = []
    network = network_of(job, model)
    hook = model.register_forward_hook(
        lambda module, inputs, outputs: forward_dtypes.append(outputs[-1].dtype)
    )
    make_forward(network, objective("boost").loss(job.objective, 3), "bf16", torch.contiguous_format)(
        torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    )
    hook.remove()
    assert forward_dtypes == [torch.bfloat16]
    run = tmp_path / "run"
    assert train(*FLAGS, "--amp", "bf16", "--epochs", "1", "--result_dir", str(run)) == 0
    checkpoint = load(run / "model_latest.pth")
    assert all(
        value.dtype == torch.float32 for value in checkpoint["model"].values() if value.is_floating_point()
    )
    assert "val loss" in (run / "log.txt").read_text()
    assert evaluate_main(*EVAL, "--evaluate-from", str(run), "--evalmode", "anytime") == 0


def test_bf16_on_a_gpu_without_it_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    job = parse_args([*TINY_MSDNET, "--amp", "bf16"])
    with pytest.raises(UserError, match="--amp bf16: Tesla V100 has no bfloat16"):
        resolve_step_mode(job.speed, torch.device("cuda"))
    assert resolve_step_mode(job.speed, torch.device("cpu")) == "eager"


def test_the_knobs_are_recorded_and_may_not_change_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 0
    config = json.loads((run / "config.json").read_text())
    assert {key: config[key] for key in ("opt", "sched", "warmup_epochs", "smoothing", "model_ema")} == {
        "opt": "sgd",
        "sched": "multistep",
        "warmup_epochs": 0,
        "smoothing": 0.0,
        "model_ema": False,
    }
    typed = ["--opt", "adamw", "--smoothing", "0.1", "--model-ema"]
    assert train("--result_dir", str(run), "--resume", "--epochs", "2", *typed) == 2
    assert_one_line_error(capsys, "opt='sgd'", "smoothing=0.0", "model_ema=False")
