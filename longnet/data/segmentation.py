"""Segmentation patch batches: random cases with replacement and nnU-Net's foreground oversampling.

`make_batch(rng)` builds one (local) batch from a numpy Generator, so a batch depends only on its seed: the
loader can rebuild batch k after a resume and each DDP rank draws its own part of the global batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from longnet.data.cases import CaseReader, bbox_for_patch, crop_and_pad, open_array
from longnet.errors import DatasetError


def foreground_flags(global_batch_size: int, offset: int, local_batch_size: int,
                     oversample_percent: float = 0.33) -> list[bool]:
    """Which samples of this rank's share must be centred on foreground.

    Positions from round(global_bs * (1 - percent)) on in the *global* batch are foreground samples (1 of 2,
    3 of 9, none of 1, as in nnU-Net); a rank holding positions [offset, offset + local_bs) takes its part.
    """
    first_fg = int(round(global_batch_size * (1 - oversample_percent)))
    return [offset + i >= first_fg for i in range(local_batch_size)]


class SegmentationPatchSampler:
    """Cuts (enlarged) patches from preprocessed cases and applies per-sample transforms."""

    def __init__(self, data_folder: str | Path, case_ids: list[str], patch_size: list[int],
                 final_patch_size: list[int], fg_flags: list[bool], transforms: Callable | None,
                 foreground_classes: list | None = None, fg_probability: float | None = None,
                 previous_stage_folder: str | Path | None = None):
        if not case_ids:
            raise DatasetError("no labelled cases to sample patches from", data_folder)
        self.reader = CaseReader(data_folder)
        self.case_ids = list(case_ids)
        self.patch_size = list(patch_size)
        self.final_patch_size = list(final_patch_size)
        self.extra_pad = [p - f for p, f in zip(self.patch_size, self.final_patch_size)]
        self.fg_flags = list(fg_flags)
        self.transforms = transforms
        self.foreground_classes = foreground_classes  # keys of class_locations eligible for oversampling
        self.fg_probability = fg_probability  # set: each sample is foreground with it, fg_flags only give the count
        # cascade: the previous stage's segmentation on this grid, cut with the same box as seg channel 1
        self.previous_stage_folder = Path(previous_stage_folder) if previous_stage_folder else None

    def _fg_voxel(self, props: dict, rng: np.random.Generator) -> list[int] | None:
        locs = props.get("class_locations") or {}
        keys = [k for k, v in locs.items() if len(v) > 0]
        if self.foreground_classes is not None:
            allowed = {str(c) for c in self.foreground_classes}
            keys = [k for k in keys if str(k) in allowed]
        if not keys:
            return None  # no foreground stored for this case: fall back to a random patch, as nnU-Net does
        voxels = locs[keys[int(rng.integers(len(keys)))]]
        v = voxels[int(rng.integers(len(voxels)))]
        return [int(x) for x in v[1:]]  # drop the channel index

    def sample(self, case_id: str, force_fg: bool, rng: np.random.Generator) -> dict:
        data, seg, props = self.reader.open(case_id)
        shape = tuple(data.shape[1:])
        center = self._fg_voxel(props, rng) if force_fg else None
        # a 2d patch on a volume: a box one slice thick (the foreground voxel's slice, else a random one)
        slab = len(shape) - len(self.patch_size)
        patch, extra = [1] * slab + self.patch_size, [0] * slab + self.extra_pad
        lo = bbox_for_patch(shape, patch, rng, center, extra)
        d = crop_and_pad(data, lo, patch, 0)
        s = crop_and_pad(seg, lo, patch, -1)
        if self.previous_stage_folder is not None:
            prev = open_array(self.previous_stage_folder / f"{case_id}.b2nd")
            s = np.concatenate([s.astype(np.int16), crop_and_pad(prev, lo, patch, -1).astype(np.int16)])
        if slab:
            d, s = d[:, 0], s[:, 0]
        out = {"image": torch.from_numpy(d).float(), "segmentation": torch.from_numpy(s.astype(np.int16))}
        if self.transforms is not None:
            with torch.no_grad():
                out = self.transforms(**out)
        return out

    def make_batch(self, rng: np.random.Generator) -> dict:
        """One batch: {'data': B×C×..., 'target': tensor or list of tensors (deep supervision), 'keys': [...]}."""
        keys = [self.case_ids[int(rng.integers(len(self.case_ids)))] for _ in self.fg_flags]
        flags = self.fg_flags
        if self.fg_probability is not None:
            flags = [bool(rng.random() < self.fg_probability) for _ in self.fg_flags]
        samples = [self.sample(k, fg, rng) for k, fg in zip(keys, flags)]
        data = torch.stack([s["image"] for s in samples])
        segs = [s["segmentation"] for s in samples]
        if isinstance(segs[0], (list, tuple)):
            target = [torch.stack([s[i] for s in segs]) for i in range(len(segs[0]))]
        else:
            target = torch.stack(segs)
        batch = {"data": data, "target": target, "keys": keys}
        if self.transforms is None:  # augmented later, batched on the device (`BatchAugmenter`), from this seed
            batch["aug_seed"] = int(rng.integers(2 ** 62))
        return batch
