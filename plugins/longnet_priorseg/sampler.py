"""Patch batches of (current visit ⊕ prior visit): nnU-Net's sampler with the prior cut from the same box.

The current visit decides everything nnU-Net's sampler decides (which case, foreground oversampling, the box);
the prior, drawn from the current visit's own earlier visits (`PriorTable`), is cropped with that very box,
which is only meaningful when the visits share one grid (aligned preprocessing, `--align`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from longnet.api import LongnetError, SegmentationPatchSampler, bbox_for_patch, crop_and_pad
from longnet_priorseg.priors import PriorTable

ALIGN_HINT = "preprocess with intra-subject alignment (longnet_plan_and_preprocess --align rigid)"


class PriorPatchSampler(SegmentationPatchSampler):
    """`make_batch(rng)` → {'data': B×(2C[+L])×..., 'target', 'keys', 'priors'} (priors: the visit used)."""

    def __init__(self, data_folder: str | Path, case_ids: list[str], patch_size: list[int],
                 final_patch_size: list[int], fg_flags: list[bool], transforms: Callable | None,
                 priors: PriorTable, mode: str, with_prior_seg: bool, foreground_classes: list | None = None,
                 fg_probability: float | None = None):
        super().__init__(data_folder, case_ids, patch_size, final_patch_size, fg_flags, transforms,
                         foreground_classes, fg_probability)
        self.priors, self.mode, self.with_prior_seg = priors, mode, bool(with_prior_seg)
        self._drawn: list[str] = []

    def sample(self, case_id: str, force_fg: bool, rng: np.random.Generator) -> dict:
        prior = self.priors.draw(case_id, self.mode, rng)
        data, seg, props = self.reader.open(case_id)
        pdata, pseg, _ = self.reader.open(prior) if prior != case_id else (data, seg, props)
        shape = tuple(data.shape[1:])
        if tuple(pdata.shape[1:]) != shape:
            raise LongnetError(f"visits {prior} and {case_id} are not on one grid ({tuple(pdata.shape[1:])} vs "
                               f"{shape}): {ALIGN_HINT}", self.reader.folder)
        center = self._fg_voxel(props, rng) if force_fg else None
        slab = len(shape) - len(self.patch_size)
        patch, extra = [1] * slab + self.patch_size, [0] * slab + self.extra_pad
        lo = bbox_for_patch(shape, patch, rng, center, extra)
        image = np.concatenate([crop_and_pad(data, lo, patch, 0), crop_and_pad(pdata, lo, patch, 0)])
        s = crop_and_pad(seg, lo, patch, -1).astype(np.int16)
        if self.with_prior_seg:
            if self.priors.prior_labelled(case_id, prior):
                ps = crop_and_pad(pseg, lo, patch, -1).astype(np.int16)
            else:  # unlabelled prior or first visit: no prior segmentation, zeros
                ps = np.zeros_like(s)
            s = np.concatenate([s, ps])
        if slab:
            image, s = image[:, 0], s[:, 0]
        out = {"image": torch.from_numpy(np.ascontiguousarray(image)).float(), "segmentation": torch.from_numpy(s)}
        if self.transforms is not None:
            with torch.no_grad():
                out = self.transforms(**out)
        self._drawn.append(prior)
        return out

    def make_batch(self, rng: np.random.Generator) -> dict:
        self._drawn = []
        batch = super().make_batch(rng)
        batch["priors"] = list(self._drawn)
        return batch
