"""Process-group helpers: detect a torchrun launch, pick the device, reduce metrics across ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; a plain run is rank 0 of a world of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process prints, writes files and saves checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one process: DDP, sharded data and metric reduction are needed."""
        return self.world_size > 1


def launch_info() -> DistInfo:
    """Rank, world size and local rank from the environment torchrun sets (or a single process)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """`--device` (auto, cpu, cuda, cuda:N) as a torch.device; torchrun ranks take their local GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device: expected auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: no CUDA device is available here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def use_threads(threads: int | None) -> None:
    """`--threads`: torch's intra-op CPU threads in this process (None keeps torch's default).
    CPU speed depends on the count several-fold, and CPU results bit for bit (docs/reproducibility.md)."""
    if threads is not None:
        torch.set_num_threads(threads)


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun job (NCCL on GPUs, gloo on CPU); a no-op for a single process."""
    if info.is_distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            rank=info.rank,
            world_size=info.world_size,
            device_id=device if device.type == "cuda" else None,
        )


def destroy_process_group() -> None:
    """Leave the job cleanly (a no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """Reduce `tensor` in place across ranks (identity for a single process) and return it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


def all_gather_objects(value: object) -> list:
    """Every rank's picklable `value` in rank order (`[value]` for a single process)."""
    if not dist.is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait for every rank (a no-op for a single process)."""
    if dist.is_initialized():
        dist.barrier()


def broadcast_buffers_(module: torch.nn.Module, source: int = 0) -> None:
    """Copy `source`'s buffers (BatchNorm running statistics, ...) to every rank."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, source)
