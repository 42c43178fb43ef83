"""Training/validation samples of TFM built from the longitudinal data layer.

A sample = T context slots (left-padded, randomly masked by `SequenceSampler`), sparsity-filled with
`fill_sparse`, plus the target visit; every volume is min–max normalised to [0, 1] per channel
on its full preprocessed grid before the shared crop (`random_crop_aligned`), so a crop never changes a
volume's scaling. Visits must share one grid (preprocess with `--align`): the crop refuses otherwise.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from longnet.api import LongitudinalIndex, LongnetError, SequenceDraw, fill_sparse, random_crop_aligned


def minmax_per_channel(data: np.ndarray) -> np.ndarray:
    """Each channel of a C×… volume scaled to [0, 1] by its own min/max (a constant channel becomes 0)."""
    data = np.asarray(data, dtype=np.float32)
    flat = data.reshape(data.shape[0], -1)
    lo, hi = flat.min(1), flat.max(1)
    scale = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
    out = (data - lo.reshape(-1, *[1] * (data.ndim - 1))) / scale.reshape(-1, *[1] * (data.ndim - 1))
    return out.astype(np.float32, copy=False)


def time_gaps(context_days: Sequence[float | None], target_days: float) -> np.ndarray:
    """target − context days per slot (NaN for a missing slot): the optional time conditioning."""
    return np.array([np.nan if d is None else float(target_days) - float(d) for d in context_days], np.float32)


def center_voxel(shape: Sequence[int]) -> list[int]:
    return [int(s) // 2 for s in shape]


class SequenceBatchBuilder:
    """Turns `SequenceDraw`s into model batches: {'context' B×T×C×…, 'target' B×C×…, 'lci' B×C×…,
    'valid' B×T bool, 'gaps' B×T float (NaN = missing)}. `patch_size` None = whole volume (one grid)."""

    def __init__(self, index: LongitudinalIndex, patch_size: Sequence[int] | None):
        self.index = index
        self.patch_size = None if patch_size is None else [int(p) for p in patch_size]

    def _volume(self, case: str) -> np.ndarray:
        return minmax_per_channel(self.index.load(case)[0])

    def sample(self, draw: SequenceDraw, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """One sample; rng None = deterministic centre crop (validation)."""
        present = [i for i, c in enumerate(draw.context) if c is not None]
        vols = [self._volume(draw.context[i]) for i in present] + [self._volume(draw.target)]
        if self.patch_size is not None:
            centre = center_voxel(vols[0].shape[1:]) if rng is None else None
            vols = random_crop_aligned(vols, self.patch_size, rng if rng is not None else np.random.default_rng(0),
                                       center_voxel=centre)
        elif len({v.shape[1:] for v in vols}) != 1:
            raise LongnetError(f"visits of subject {draw.subject} are not on one grid (spatial shapes "
                               f"{[v.shape[1:] for v in vols]}); preprocess with intra-subject alignment (--align)")
        slots: list[np.ndarray | None] = [None] * len(draw.context)
        for i, v in zip(present, vols[:-1]):
            slots[i] = v
        filled = fill_sparse(slots)
        return {"context": np.stack(filled), "target": vols[-1], "lci": vols[len(present) - 1],
                "valid": np.array([c is not None for c in draw.context]),
                "gaps": time_gaps(draw.context_days, draw.target_days)}

    def batch(self, draws: Sequence[SequenceDraw], rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        samples = [self.sample(d, rng) for d in draws]
        return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
