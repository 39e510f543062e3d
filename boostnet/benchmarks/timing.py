"""The timings of scripts/benchmark.py (see its docstring): training steps and evaluation
forwards, eager and fast, real early exit, and the device-resident loader, on synthetic data.
"""

from __future__ import annotations

import copy
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from adaptive_inference import exit_fractions, find_thresholds
from boostnet.benchmarks.cases import Benchmarked, BenchmarkOptions
from boostnet.benchmarks.exit_overhead import time_exit_overhead
from boostnet.benchmarks.subjects import build, sgd_for, synthetic_batch
from boostnet.data.datasets import DATASETS
from boostnet.data.gpu_batches import GpuBatches
from boostnet.evaluation.early_exit import (
    GraphedExitStages,
    early_exit_predict,
    exit_stage,
    expected_cost,
    synchronize,
)
from boostnet.reporting.markdown import markdown_table
from boostnet.training.settings import TrainingJob
from boostnet.training.step import build_eval_forward, build_train_step
from utils.distributed import DistInfo, resolve_device
from utils.errors import UserError
from utils.json_files import write_json
from utils.machine import device_name

EARLY_EXIT_LEVEL = 10  # budget level k of docs/evaluation.md: exit shares p_n = q^n / sum q^m with q = 0.5
EARLY_EXIT_BATCHES = (1, 256)


@dataclass
class Timing:
    """Median ms per call over the timed calls, the first (compiling / capturing) call's seconds."""

    ms: float
    first_call_s: float
    peak_memory_mb: Optional[float]


def time_calls(call: Callable[[], object], device: torch.device, warmup: int, steps: int) -> Timing:
    """Median per-call time after `warmup` calls; CUDA events on a GPU, wall clock on the CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    call()
    synchronize(device)
    first_call_s = time.perf_counter() - started
    for _ in range(warmup):
        call()
    synchronize(device)
    durations = event_durations(call, steps) if device.type == "cuda" else wall_durations(call, steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Timing(statistics.median(durations), first_call_s, peak)


def event_durations(call: Callable[[], object], steps: int) -> list[float]:
    """Milliseconds between CUDA events recorded around each call; one synchronisation at the end."""
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for event in events[1:]:
        call()
        event.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in zip(events, events[1:])]


def wall_durations(call: Callable[[], object], steps: int) -> list[float]:
    """Wall-clock milliseconds of each call (CPU work is done when the call returns)."""
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1000)
    return durations


Case = tuple[Benchmarked, TrainingJob]  # a timed model and its recipe's flags, parsed


def time_mode(case: Case, mode: str, device: torch.device, options: BenchmarkOptions) -> dict:
    """Train-step and eval-forward timings of one recipe model in one step mode."""
    recipe, job = case
    network, losses = build(job, device)
    train_settings = job.train
    optimizer = sgd_for(job, network, device)
    step = build_train_step(
        network,
        losses,
        optimizer,
        mode,
        amp=options.amp,
        channels_last=options.channels_last,
        compile_backend=options.compile_backend,
    )
    batch = train_settings.batch_size
    images, targets = synthetic_batch(job, batch, device)
    network.train()
    train = time_calls(lambda: step(images, targets), device, options.warmup, options.steps)
    network.eval()
    forward = build_eval_forward(
        network,
        mode,
        amp=options.amp,
        channels_last=options.channels_last,
        compile_backend=options.compile_backend,
    )
    eval_images, _ = synthetic_batch(job, recipe.eval_batch, device)
    evaluate = time_calls(lambda: forward(eval_images), device, options.warmup, options.steps)
    return {
        "model": recipe.name,
        "mode": mode,
        "batch": batch,
        "eval_batch": recipe.eval_batch,
        "train": summary(train, batch),
        "eval": summary(evaluate, recipe.eval_batch),
        "projected_recipe_hours": (train_settings.epochs * recipe.steps_per_epoch(job) * train.ms / 3.6e6),
    }


def summary(timing: Timing, batch: int) -> dict:
    """The timing as JSON fields plus images/s."""
    return {**asdict(timing), "images_per_s": batch * 1000 / timing.ms}


def add_speedups(rows: list[dict]) -> None:
    """Speedup of every row over the eager row of the same model."""
    eager = {row["model"]: row for row in rows if row["mode"] == "eager"}
    for row in rows:
        base = eager[row["model"]]
        row["train_speedup"] = base["train"]["ms"] / row["train"]["ms"]
        row["eval_speedup"] = base["eval"]["ms"] / row["eval"]["ms"]


def paired_ms(
    runs: dict[str, Callable], images: Tensor, batch: int, device: torch.device, options: BenchmarkOptions
) -> dict[str, float]:
    """Milliseconds per pass over `images` in chunks of `batch`, for each of `runs`."""
    return {
        name: time_calls(
            torch.no_grad()(lambda run=run: [run(chunk) for chunk in images.split(batch)]),
            device,
            options.early_exit_warmup,
            options.early_exit_steps,
        ).ms
        for name, run in runs.items()
    }


def time_early_exit(case: Case, device: torch.device, options: BenchmarkOptions) -> list[dict]:
    """Real early exit vs the full network at batch 1 and 256, and against its cost ratio's promise.

    Thresholds put the shares p_n of the budget level (docs/evaluation.md) EARLY_EXIT_LEVEL of 256 images
    out at each exit; "promised" is the full network's cost over the expected cost of the
    timed images. On a GPU both paths replay CUDA graphs (the full network one per batch,
    early exit one per exit stage wherever the sub-batch still has the batch's size).
    """
    recipe, job = case
    network, _ = build(job, device)
    network.eval()
    costs = job.model.backbone.cost(copy.deepcopy(network.network).cpu(), job.model.inputs).macs
    images, _ = synthetic_batch(job, max(EARLY_EXIT_BATCHES), device)
    with torch.no_grad():
        probs = network.probabilities(network.backbone(images))
    thresholds = find_thresholds(probs.cpu(), exit_fractions(network.num_exits, EARLY_EXIT_LEVEL)).tolist()
    exits = early_exit_predict(network, images, thresholds).exit_index.cpu()
    graphs = device.type == "cuda"
    rows = []
    for batch in EARLY_EXIT_BATCHES:
        timed = images if batch > 1 else images[: options.single_images]
        stages = GraphedExitStages(exit_stage(network), batch, device) if graphs else None
        runs = {
            "full_network": build_eval_forward(network, "cuda_graph" if graphs else "eager"),
            "early_exit": lambda x, stages=stages: early_exit_predict(network, x, thresholds, stages),
        }
        ms = paired_ms(runs, timed, batch, device, options)
        counts = torch.bincount(exits[: len(timed)], minlength=network.num_exits)
        promised = costs[-1] / expected_cost(counts, costs)
        speedup = ms["full_network"] / ms["early_exit"]
        rows.append(
            {
                "model": recipe.name,
                "batch": batch,
                "images": len(timed),
                "cuda_graphs": graphs,
                "exit_counts": counts.tolist(),
                "promised_speedup": promised,
                **{f"{name}_images_per_s": len(timed) * 1000 / value for name, value in ms.items()},
                "speedup": speedup,
                "share_of_promise": speedup / promised,
            }
        )
    return rows


def time_gpu_data(device: torch.device, quick: bool, steps: int) -> dict:
    """ms per augmented batch of 64 from a CIFAR-sized uint8 set kept on the device."""
    count = 5_000 if quick else DATASETS["cifar100"].train_size
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8)
    data = GpuBatches.from_uint8(images, torch.zeros(count, dtype=torch.int64), 64, device, seed=0)
    generator, order = data.generator(0), data.shard(0)
    timing = time_calls(lambda: data.augment(data.images[order[:64]], generator), device, 3, steps)
    return {"images": count, "batch": 64, "ms_per_batch": timing.ms, "images_per_s": 64 * 1000 / timing.ms}


STEP_COLUMNS = ["model", "mode", "batch", "train ms/step", "train img/s", "train speedup", "eval ms"]
STEP_COLUMNS += ["eval speedup", "first call s", "peak MB", "recipe hours"]
EARLY_EXIT_COLUMNS = ["model", "batch", "CUDA graphs", "exits", "promised", "early exit img/s"]
EARLY_EXIT_COLUMNS += ["full img/s", "speedup", "share of promise"]


def step_cells(r: dict) -> tuple:
    """One row of the step table: the timings of one recipe in one mode."""
    peak = r["train"]["peak_memory_mb"]
    return (
        r["model"],
        r["mode"],
        r["batch"],
        f"{r['train']['ms']:.2f}",
        f"{r['train']['images_per_s']:.0f}",
        f"{r['train_speedup']:.2f}x",
        f"{r['eval']['ms']:.2f}",
        f"{r['eval_speedup']:.2f}x",
        f"{r['train']['first_call_s']:.1f}",
        "-" if peak is None else f"{peak:.0f}",
        f"{r['projected_recipe_hours']:.2f}",
    )


def early_exit_cells(r: dict) -> tuple:
    """One row of the early-exit table: one recipe at one batch size."""
    return (
        r["model"],
        r["batch"],
        "yes" if r["cuda_graphs"] else "no",
        "/".join(map(str, r["exit_counts"])),
        f"{r['promised_speedup']:.2f}x",
        f"{r['early_exit_images_per_s']:.0f}",
        f"{r['full_network_images_per_s']:.0f}",
        f"{r['speedup']:.2f}x",
        f"{r['share_of_promise']:.0%}",
    )


def results_tables(rows: list[dict], early_exit: list[dict]) -> str:
    """The results as Markdown tables (step timings, then early exit)."""
    tables = [markdown_table(STEP_COLUMNS, [step_cells(r) for r in rows])]
    if early_exit:
        tables.append(markdown_table(EARLY_EXIT_COLUMNS, [early_exit_cells(r) for r in early_exit]))
    return "\n\n".join(tables)


def wants_early_exit(job: TrainingJob, device: torch.device, options: BenchmarkOptions) -> bool:
    """Early exit is timed unless switched off; on the CPU only at CIFAR size (256 ImageNet images are
    slow)."""
    return options.early_exit and (device.type == "cuda" or not job.model.inputs.imagenet_style)


def fast_modes(device: torch.device, requested: Optional[Sequence[str]]) -> list[str]:
    """The fast paths to time: as requested, else compile on the CPU and both graph modes on CUDA."""
    if requested:
        return list(requested)
    return ["cuda_graph", "compiled_cuda_graph"] if device.type == "cuda" else ["compile"]


def time_recipe(case: Case, device: torch.device, options: BenchmarkOptions) -> tuple[list[dict], list[dict]]:
    """One recipe model's step-mode rows and early-exit rows."""
    rows = [time_mode(case, mode, device, options) for mode in ["eager", *fast_modes(device, options.modes)]]
    early_exit = time_early_exit(case, device, options) if wants_early_exit(case[1], device, options) else []
    return rows, early_exit


def threads_per_job(options: BenchmarkOptions) -> int:
    """CPU threads each timing process uses: the machine's threads shared out between the jobs."""
    return max(1, torch.get_num_threads() // options.jobs)


def time_in_job(case: Case, device: torch.device, options: BenchmarkOptions) -> tuple[list[dict], list[dict]]:
    """`time_recipe` in a worker process, on its share of the CPU threads."""
    torch.set_num_threads(threads_per_job(options))
    return time_recipe(case, device, options)


def time_in_workers(
    cases: Sequence[Case], device: torch.device, options: BenchmarkOptions
) -> list[tuple[list[dict], list[dict]]]:
    """`time_recipe` for every recipe, `options.jobs` recipes at a time in worker processes.

    On the CPU, tracing and compiling is single-threaded Python, so recipes timed side by side
    on their own cores finish sooner; each process's timings use only its own threads. The
    largest models (exits x scales, a proxy for tracing time) start first. Single-threaded
    workers are forked, inheriting the imported torch (spawning re-imports it, ~7 s each); a
    worker with several threads is spawned, since GNU OpenMP hangs in a forked child whose
    parent has already run a parallel op.
    """
    methods = multiprocessing.get_all_start_methods()
    fork = threads_per_job(options) == 1 and "fork" in methods
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with ProcessPoolExecutor(options.jobs, mp_context=context) as pool:
        futures = {
            case[0].name: pool.submit(time_in_job, case, device, options)
            for case in sorted(cases, key=trace_size, reverse=True)
        }
        return [futures[recipe.name].result() for recipe, _ in cases]


def trace_size(case: Case) -> int:
    """Exits x scales of the recipe's model: roughly how long tracing it takes."""
    config = case[1].model.config
    return config.num_exits * len(config.grFactor)


def print_summary(result: dict, out: Path, rows: list[dict], early_exit: list[dict]) -> None:
    """The console's account of a benchmark run: where it went, the tables, the extra timings."""
    print(f"{result['device']}, torch {result['torch']}, {result['wall_s']:.0f} s; written to {out}\n")
    print(results_tables(rows, early_exit))
    data = result["gpu_data"]
    print(
        f"\ndevice-resident data: {data['ms_per_batch']:.2f} ms per augmented batch of 64 "
        f"({data['images_per_s']:.0f} images/s)"
    )
    if result["exit_overhead"] is not None:
        cost = result["exit_overhead"]
        print(
            f"exits' training overhead, {cost['model']} ({cost['exits']} exits, batch {cost['batch']}, "
            f"{cost['image_size']} px): {cost['with_exits_ms']:.1f} ms vs plain {cost['plain_ms']:.1f} ms "
            f"per step, {cost['overhead_percent']:+.1f}%"
        )


def run_benchmark(
    options: BenchmarkOptions, cases: Sequence[Case], overhead: Optional[TrainingJob] = None
) -> dict:
    """Time the `cases` as `options` (scripts/benchmark.py's flags) ask, and the exits' overhead
    on the `overhead` model when given, write the JSON, print the tables; returns the JSON dict."""
    device = resolve_device(options.device, DistInfo())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    options = replace(options, jobs=options.jobs or (2 if options.quick and device.type == "cpu" else 1))
    if options.jobs > 1 and device.type == "cuda":
        raise UserError("--jobs > 1 would share one GPU between timings; use --jobs 1")
    started = time.perf_counter()
    timed = (
        time_in_workers(cases, device, options)
        if options.jobs > 1
        else [time_recipe(case, device, options) for case in cases]
    )
    rows = [row for recipe_rows, _ in timed for row in recipe_rows]
    early_exit = [row for _, recipe_rows in timed for row in recipe_rows]
    add_speedups(rows)
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "quick": options.quick,
        "amp": options.amp,
        "compile_backend": options.compile_backend,
        "channels_last": options.channels_last,
        "threads": threads_per_job(options),
        "jobs": options.jobs,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "recipes": [recipe.record(job) for recipe, job in cases],
        "results": rows,
        "early_exit": early_exit,
        "gpu_data": time_gpu_data(device, options.quick, options.steps),
        "exit_overhead": None
        if overhead is None
        else time_exit_overhead(overhead, overhead.train.batch_size, options.warmup, options.steps),
    }
    result["wall_s"] = time.perf_counter() - started
    options.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(options.out, result)
    print_summary(result, options.out, rows, early_exit)
    return result
