"""Background batch loading whose batch k depends only on (seed, rank, stream, k).

Each batch is produced by `make_batch(rng)` under its own seed (numpy Generator plus the global numpy/torch
RNGs that batchgeneratorsv2 uses), so results do not depend on the number of workers, a resumed run rebuilds
exactly the batches it would have seen, and every DDP rank draws different batches.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def default_num_workers() -> int:
    """`LONGNET_N_PROC_DA` (or nnU-Net's `nnUNet_n_proc_DA`) if set, else min(cpu_count, 12)."""
    for var in ("LONGNET_N_PROC_DA", "nnUNet_n_proc_DA"):
        value = os.environ.get(var)
        if value not in (None, ""):
            try:
                return max(0, int(value))
            except ValueError:
                from longnet.errors import LongnetError

                raise LongnetError(f"{var} must be an integer, got {value!r}") from None
    return min(os.cpu_count() or 1, 12)


def batch_seed(seed: int, rank: int, stream: str, index: int) -> int:
    """A 32-bit seed unique to (seed, rank, stream, batch index)."""
    stream_id = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([seed, rank, stream_id, index]).generate_state(1)[0])


class _BatchDataset(Dataset):
    def __init__(self, make_batch: Callable[[np.random.Generator], dict], seed: int, rank: int, stream: str):
        self.make_batch, self.seed, self.rank, self.stream = make_batch, seed, rank, stream

    def __len__(self) -> int:  # indices come from the infinite sampler
        return 2 ** 62

    def __getitem__(self, index: int) -> dict:
        s = batch_seed(self.seed, self.rank, self.stream, index)
        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            np.random.seed(s)
            torch.manual_seed(s)
            try:
                return self.make_batch(np.random.default_rng(s))
            finally:
                np.random.set_state(np_state)


class _CountFrom(Sampler):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield i
            i += 1

    def __len__(self) -> int:
        return 2 ** 62


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def batch_iterator(make_batch: Callable[[np.random.Generator], dict], *, seed: int, rank: int = 0,
                   stream: str = "train", start_index: int = 0, num_workers: int | None = None,
                   pin_memory: bool = False, prefetch_factor: int = 2) -> Iterator[dict]:
    """An endless iterator of batches start_index, start_index + 1, ... (in order) built in worker processes."""
    num_workers = default_num_workers() if num_workers is None else num_workers
    ds = _BatchDataset(make_batch, seed, rank, stream)
    if num_workers == 0 and not pin_memory:
        return (ds[i] for i in _CountFrom(start_index))
    kwargs = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor, persistent_workers=True, worker_init_fn=_worker_init)
    loader = DataLoader(ds, batch_size=None, sampler=_CountFrom(start_index), **kwargs)
    return iter(loader)
