"""Background batch loading whose batch k depends only on (seed, rank, stream, k).

Each batch is produced by `make_batch(rng)` under its own seed (numpy Generator plus the global numpy/torch
RNGs that batchgeneratorsv2 uses), so results do not depend on the number of workers, a resumed run rebuilds
exactly the batches it would have seen, and every DDP rank draws different batches.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
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
                n = int(value)
            except ValueError:
                n = -1
            if n < 0:  # a negative count used to mean 0 silently
                from longnet.errors import LongnetError

                raise LongnetError(f"{var} must be an integer >= 0 (0 = load in the main process), got {value!r}")
            return n
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


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _quiet_exit(signum, frame) -> None:
    os._exit(0)


def _worker_init(_worker_id: int) -> None:
    """Workers leave quietly on SIGTERM (exit status 0, which torch does not report as a crash) and ignore SIGINT:
    a scheduler signals the whole process group, and the parent, which gets the same SIGTERM, checkpoints and exits
    (a loader that then finds its workers gone is expected: see `Trainer._next_batch`). Ignoring SIGTERM instead
    would hang the parent's exit, which terminates leftover workers with SIGTERM and waits for them."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _quiet_exit)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGTERM/SIGINT while workers start, so none dies between fork and `_worker_init`; a signal that
    arrives meanwhile is delivered to the parent when unblocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
    with _stop_signals_blocked():
        return iter(loader)
