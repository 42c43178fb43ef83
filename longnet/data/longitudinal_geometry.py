"""Geometry for pairs and sequences: one crop window and one spatial transform shared by every visit.

Visits of an aligned subject share a grid, so voxel (z, y, x) is the same anatomy in every visit; a method
that compares visits voxel-wise (LongRep, TFM) must keep that correspondence through cropping and
augmentation. The spatial recipe is nnU-Net's (`longnet.data.augmentation.spatial_transforms`), applied once
to the visits stacked along the channel axis.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

from longnet.data.augmentation import SpatialAugConfig, mirror_transforms, spatial_aug_config, spatial_transforms
from longnet.data.cases import bbox_for_patch, crop_and_pad
from longnet.errors import LongnetError


def _spatial_shapes(arrays: Sequence) -> list[tuple[int, ...]]:
    return [tuple(int(s) for s in a.shape[1:]) for a in arrays]


def _check_one_grid(arrays: Sequence, what: str) -> tuple[int, ...]:
    if not arrays:
        raise ValueError(f"{what} needs at least one array")
    shapes = _spatial_shapes(arrays)
    if len(set(shapes)) != 1:
        raise LongnetError(f"{what}: visits are not on one grid (spatial shapes {shapes}); preprocess with "
                           "intra-subject alignment (--align) to compare visits voxel-wise")
    return shapes[0]


def random_crop_aligned(arrays: Sequence, patch_size: Sequence[int], rng: np.random.Generator,
                        pad_values: float | Sequence[float] = 0.0, center_voxel: Sequence[int] | None = None,
                        extra_pad: Sequence[int] | None = None) -> list[np.ndarray]:
    """The SAME box of `patch_size` from every C×Z×Y×X array (numpy or lazily read blosc2).

    Box placement follows the segmentation sampler (`bbox_for_patch`): random, or centred on `center_voxel`;
    parts outside the image get that array's pad value (data 0, seg −1 as in nnU-Net).
    """
    shape = _check_one_grid(arrays, "random_crop_aligned")
    patch = [int(p) for p in patch_size]
    if len(patch) != len(shape):
        raise ValueError(f"patch_size {patch} does not match the arrays' spatial shape {shape}")
    pads = [float(pad_values)] * len(arrays) if np.isscalar(pad_values) else [float(v) for v in pad_values]
    if len(pads) != len(arrays):
        raise ValueError("need one pad value per array")
    lo = bbox_for_patch(shape, patch, rng, None if center_voxel is None else [int(c) for c in center_voxel],
                        None if extra_pad is None else list(extra_pad))
    return [crop_and_pad(a, lo, patch, pv) for a, pv in zip(arrays, pads)]


def _as_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, copy=True))
    return t.to(dtype)


def paired_spatial_augment(stack: Sequence, rng: np.random.Generator, patch_size: Sequence[int] | None = None,
                           segs: Sequence | None = None, aug: SpatialAugConfig | None = None, mirror: bool = True,
                           p_rotation: float = 0.2, p_scaling: float = 0.2,
                           scaling: tuple[float, float] = (0.7, 1.4)
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """ONE random rotation/scaling (+ flips) applied to all visits, so every member gets identical geometry.

    `stack`: per-visit C_i×Z×Y×X images on one grid (typically enlarged crops from `random_crop_aligned` with
    `aug.initial_patch_size`; with `aug.dummy_2d` the first axis is not resampled, so it must already have
    the patch's size); `segs`: optional matching 1×Z×Y×X label maps. The visits are concatenated
    along the channel axis, transformed once, and split again. Returns (images float32, segs or None) as
    torch tensors of `patch_size` (default: the input size). `aug` defaults to nnU-Net's choice for the patch
    (`spatial_aug_config`); the probabilities default to nnU-Net's. The transform's randomness comes only
    from `rng` (the global numpy/torch RNG states are restored afterwards).
    """
    shape = _check_one_grid(list(stack) + list(segs or []), "paired_spatial_augment")
    patch = list(shape) if patch_size is None else [int(p) for p in patch_size]
    aug = spatial_aug_config(patch) if aug is None else aug
    transforms = spatial_transforms(patch, aug, p_rotation, p_scaling, scaling)
    if mirror:
        transforms += mirror_transforms(aug)
    images = [_as_tensor(x, torch.float32) for x in stack]
    sizes = [int(x.shape[0]) for x in images]
    sample = {"image": torch.cat(images, 0)}
    seg_sizes: list[int] = []
    if segs is not None:
        seg_t = [_as_tensor(s, torch.int16) for s in segs]
        seg_sizes = [int(s.shape[0]) for s in seg_t]
        sample["segmentation"] = torch.cat(seg_t, 0)
    seed = int(rng.integers(2 ** 31))
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            np.random.seed(seed)
            torch.manual_seed(seed)
            out = ComposeTransforms(transforms)(**sample)
    finally:
        np.random.set_state(np_state)
    out_images = list(torch.split(out["image"], sizes, 0))
    out_segs = list(torch.split(out["segmentation"], seg_sizes, 0)) if segs is not None else None
    return out_images, out_segs
