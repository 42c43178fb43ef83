"""Crop to the nonzero region of all channels (holes filled); label voxels outside it become -1."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """[[lo, hi), ...] per axis of the True voxels. Written here (not acvl_utils) because importing that
    module pulls in torch, which costs seconds in every preprocessing worker."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    return binary_fill_holes(mask)


def union_bbox(datas: list[np.ndarray]) -> list[list[int]]:
    """One box around the nonzero masks of several C×… arrays on the same grid (aligned visits of a subject),
    so that every visit is cropped identically and keeps voxel correspondence."""
    mask = nonzero_mask(datas[0])
    for d in datas[1:]:
        mask |= nonzero_mask(d)
    return bounding_box(mask) if mask.any() else [[0, s] for s in mask.shape]


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None, outside_label: int = -1,
                    bbox: list[list[int]] | None = None):
    """Return (cropped data, cropped seg with `outside_label` outside the mask, bbox [[lo, hi), ...]).

    `bbox` overrides the box (the mask, and so the -1 region, stays this array's own)."""
    mask = nonzero_mask(data)
    if bbox is not None:
        bbox = [[int(lo), int(hi)] for lo, hi in bbox]
    elif not mask.any():
        bbox = [[0, s] for s in mask.shape]
    else:
        bbox = bounding_box(mask)
    slicer = tuple(slice(lo, hi) for lo, hi in bbox)
    mask = mask[slicer][None]
    data = data[(slice(None),) + slicer]
    if seg is not None:
        seg = seg[(slice(None),) + slicer]
        seg[(seg == 0) & ~mask] = outside_label
    else:
        seg = np.where(mask, np.int8(0), np.int8(outside_label))
    return data, seg, bbox
