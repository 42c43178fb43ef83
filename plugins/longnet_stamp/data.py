"""Batches for STAMP: (past, future, Δt, mask noise) pairs for pretraining and single scans for the probe.

Everything random comes from the per-batch Generator the trainer passes in (`make_batch(rng)`), so batches
are reproducible and resume identically; the mask noise is drawn here too for the same reason.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from longnet.api import LongitudinalIndex, LongnetError, PairDraw, bbox_for_patch, crop_and_pad, random_crop_aligned


class ImageCache:
    """Image arrays (no segmentation) of preprocessed cases, kept in memory up to `max_bytes` per process.

    Pairs and probe batches revisit the same visits every epoch; small cohorts then fit in memory entirely and
    each visit is decompressed once per loader process. Arrays are read-only.
    """

    def __init__(self, index: LongitudinalIndex, max_bytes: int = 1 << 30):
        self.index, self.max_bytes = index, int(max_bytes)
        self._cache: dict[str, np.ndarray] = {}
        self._used = 0

    def __call__(self, case: str) -> np.ndarray:
        hit = self._cache.get(case)
        if hit is None:
            data, _, _ = self.index.open(case)
            hit = np.ascontiguousarray(data[...], dtype=np.float32)
            hit.flags.writeable = False
            while self._cache and self._used + hit.nbytes > self.max_bytes:
                self._used -= self._cache.pop(next(iter(self._cache))).nbytes
            if hit.nbytes <= self.max_bytes:
                self._cache[case] = hit
                self._used += hit.nbytes
        return hit


def cache_budget(num_workers: int, total_bytes: int = 4 << 30) -> int:
    """Per-process image cache so that all loader processes together stay below `total_bytes`."""
    return int(total_bytes // max(1, num_workers))


def pair_dt_range(index: LongitudinalIndex) -> tuple[float, float]:
    """(min, max) over every intra-subject visit pair with Δt > 0: the default pair window and Δt bin range."""
    dts = []
    for cases in index.subjects.values():
        days = [index.days(c) for c in cases]
        dts += [b - a for i, a in enumerate(days) for b in days[i + 1:] if b - a > 0]
    if not dts:
        raise LongnetError("no subject has two visits with different `days` (visitsTr.csv): STAMP needs "
                           "longitudinal pairs", index.data_folder)
    return float(np.floor(min(dts))), float(np.ceil(max(dts)))


def crop(arrays: Sequence[np.ndarray], size: Sequence[int], rng: np.random.Generator | None) -> list[np.ndarray]:
    """Same window for arrays on one grid (random, or centred when rng is None); else one window each."""
    shapes = {tuple(a.shape[1:]) for a in arrays}
    if len(shapes) == 1:
        centre = None if rng is not None else [s // 2 for s in arrays[0].shape[1:]]
        return random_crop_aligned(list(arrays), size, rng or np.random.default_rng(0), 0.0, centre)
    out = []
    for a in arrays:
        shape = tuple(a.shape[1:])
        centre = None if rng is not None else [s // 2 for s in shape]
        lo = bbox_for_patch(shape, list(size), rng or np.random.default_rng(0), centre)
        out.append(crop_and_pad(a, lo, list(size), 0.0))
    return out


def augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips (each spatial axis p=0.5) for every array, so pair members keep their geometry."""
    for axis in range(1, arrays[0].ndim):
        if rng.random() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


class PairBatcher:
    """`make_batch(rng)` → {'past', 'future' B×C×Z×Y×X, 'dt' B (days), 'noise' B×L} from pair draws."""

    def __init__(self, index: LongitudinalIndex, sampler, batch_size: int, size: Sequence[int], num_patches: int,
                 train: bool = True, frozen: list[PairDraw] | None = None, cache_bytes: int = 1 << 30):
        self.index, self.sampler, self.batch_size = index, sampler, int(batch_size)
        self.images = ImageCache(index, cache_bytes)
        self.size, self.num_patches, self.train, self.frozen = list(size), int(num_patches), train, frozen

    def _draw(self, rng: np.random.Generator) -> PairDraw:
        if self.frozen:
            return self.frozen[int(rng.integers(len(self.frozen)))]
        return self.sampler.draw(rng)

    def make_batch(self, rng: np.random.Generator) -> dict:
        return self.batch_from_draws([self._draw(rng) for _ in range(self.batch_size)], rng)

    def batch_from_draws(self, draws: Sequence[PairDraw], rng: np.random.Generator) -> dict:
        past, future = [], []
        for d in draws:
            a, b = self.images(d.case_a), self.images(d.case_b)
            a, b = crop([a, b], self.size, rng if self.train else None)
            if self.train:
                a, b = augment([a, b], rng)
            past.append(np.asarray(a, np.float32))
            future.append(np.asarray(b, np.float32))
        n = len(draws)
        return {"past": torch.from_numpy(np.stack(past)), "future": torch.from_numpy(np.stack(future)),
                "dt": torch.tensor([d.dt_days for d in draws], dtype=torch.float32),
                "noise": torch.from_numpy(rng.random((n, self.num_patches)).astype(np.float32))}


def target_value(meta: dict, column: str) -> float | None:
    """The binary target of a visit (None when missing); anything but 0/1 is refused with a clear message."""
    v = meta.get(column)
    if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise LongnetError(f"target column {column!r} must be binary (0/1), found {v!r}") from None
    if f not in (0.0, 1.0):
        raise LongnetError(f"target column {column!r} must be binary (0/1), found {v!r}")
    return f


def labelled_cases(index: LongitudinalIndex, column: str) -> dict[str, float]:
    """{case: target} for every visit of `index` whose `column` is present."""
    out = {}
    for c in index.cases:
        v = target_value(index.meta(c), column)
        if v is not None:
            out[c] = v
    return out


class ScanBatcher:
    """`make_batch(rng)` → {'image' B×C×Z×Y×X, 'target' B, 'dt' B, 'index' B} of single scans with a binary target
    ('index' = position in `cases`; with `images=False` the batch holds no image, for cached encoder features)."""

    def __init__(self, index: LongitudinalIndex, targets: dict[str, float], batch_size: int, size: Sequence[int],
                 horizon_days: float, train: bool = True, cache_bytes: int = 1 << 30, images: bool = True):
        if not targets:
            raise LongnetError("no visit has a value in the target column", index.data_folder)
        self.index, self.cases = index, sorted(targets)
        self.targets, self.batch_size, self.size = targets, int(batch_size), list(size)
        self.horizon, self.train, self.with_images = float(horizon_days), train, images
        self.images = ImageCache(index, cache_bytes)
        self._pos = {c: i for i, c in enumerate(self.cases)}

    def load(self, case: str, rng: np.random.Generator | None) -> np.ndarray:
        img = crop([self.images(case)], self.size, rng)[0]
        if rng is not None:
            img = augment([img], rng)[0]
        return np.asarray(img, np.float32)

    def make_batch(self, rng: np.random.Generator) -> dict:
        picks = [self.cases[int(i)] for i in rng.integers(len(self.cases), size=self.batch_size)]
        return self.batch_of(picks, rng if self.train else None)

    def make_batch_all(self) -> dict:
        """Every case once, in sorted order, without augmentation (deterministic validation)."""
        return self.batch_of(self.cases, None)

    def batch_of(self, picks: Sequence[str], rng: np.random.Generator | None) -> dict:
        batch = {"target": torch.tensor([self.targets[c] for c in picks], dtype=torch.float32),
                 "dt": torch.full((len(picks),), self.horizon, dtype=torch.float32),
                 "index": torch.tensor([self._pos[c] for c in picks], dtype=torch.long)}
        if self.with_images:
            batch["image"] = torch.from_numpy(np.stack([self.load(c, rng) for c in picks]))
        return batch


def center_crop(data: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centred crop/pad (zero) of one C×Z×Y×X array: what validation and prediction feed the encoder."""
    return np.asarray(crop([data], size, None)[0], np.float32)
