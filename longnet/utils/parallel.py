"""Per-case work in worker processes (nnU-Net's `-np`), with the default worker count nnU-Net uses."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_num_processes() -> int:
    """`LONGNET_DEF_N_PROC` (or nnU-Net's `nnUNet_def_n_proc`) if set, else 8, nnU-Net's default for `-np`."""
    for var in ("LONGNET_DEF_N_PROC", "nnUNet_def_n_proc"):
        value = os.environ.get(var)
        if value and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return 8


def map_processes(fn: Callable[[T], R], jobs: Sequence[T], num_processes: int) -> list[R]:
    """`[fn(j) for j in jobs]`, in order, over up to `num_processes` spawned workers (never more than cores or
    jobs; one means in-process). Spawn, not fork: the parent may hold torch/OpenMP threads that a fork would
    inherit in a broken state."""
    n = max(1, min(int(num_processes), len(jobs), os.cpu_count() or 1))
    if n == 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
        return list(pool.map(fn, jobs))
