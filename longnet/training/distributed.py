"""DDP plumbing: process-group setup (torchrun or spawn), batch splitting and small collectives.

Works with NCCL on CUDA and gloo on CPU (used by the tests), on one node or several (`torchrun --nnodes N`):
`rank` is global and decides who writes files, `local_rank` (index on the node) only selects the GPU.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Rank/world of this process; world_size 1 means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list:
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def local_rank_from_env() -> int:
    """This process's index on its node, which picks its GPU: torchrun's LOCAL_RANK; without it (another
    launcher) the global RANK modulo the node's GPU count, never RANK itself (past the first node it exceeds
    the number of GPUs)."""
    if os.environ.get("LOCAL_RANK", "") != "":
        return int(os.environ["LOCAL_RANK"])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and torch.cuda.is_available():
        return int(os.environ["RANK"]) % max(1, torch.cuda.device_count())
    return 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group described by RANK/WORLD_SIZE/MASTER_* (set by torchrun or our spawn)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = local_rank_from_env()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def process_group_size() -> int:
    """World size of the running process group, 1 without one (for code that has no DistContext, e.g. losses)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients too (each rank's inputs affect every rank's result)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def split_batch(global_batch_size: int, world_size: int, rank: int) -> tuple[int, int]:
    """(local batch size, offset of this rank's first sample in the global batch); remainder to the first ranks."""
    if global_batch_size < world_size:
        from longnet.errors import LongnetError

        raise LongnetError(f"batch size {global_batch_size} cannot be split over {world_size} processes "
                           f"(each needs at least one sample)")
    base, rem = divmod(global_batch_size, world_size)
    sizes = [base + (1 if r < rem else 0) for r in range(world_size)]
    return sizes[rank], sum(sizes[:rank])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
