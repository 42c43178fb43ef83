"""Resampling with nnU-Net's semantics: skimage cubic for images, per-label linear for segmentations,
and 'separate z' (in-plane first, then nearest along the coarse axis) when spacing is anisotropic."""
from __future__ import annotations

import numpy as np
from batchgenerators.augmentations.utils import resize_segmentation
from scipy.ndimage import map_coordinates
from skimage.transform import resize

ANISO_THRESHOLD = 3


def compute_new_shape(old_shape, old_spacing, new_spacing) -> np.ndarray:
    return np.array([int(round(s / n * k)) for s, n, k in zip(old_spacing, new_spacing, old_shape)])


def _is_anisotropic(spacing) -> bool:
    return (np.max(spacing) / np.min(spacing)) > ANISO_THRESHOLD


def _lowres_axes(spacing) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=float)
    return np.where(max(spacing) / spacing == 1)[0]


def _separate_z_axis(current_spacing, new_spacing, force_separate_z) -> int | None:
    if force_separate_z is not None:
        axes = _lowres_axes(current_spacing) if force_separate_z else None
    elif _is_anisotropic(current_spacing):
        axes = _lowres_axes(current_spacing)
    elif _is_anisotropic(new_spacing):
        axes = _lowres_axes(new_spacing)
    else:
        axes = None
    if axes is None or len(axes) != 1:  # 2 or 3 equally coarse axes: no separate-z
        return None
    return int(axes[0])


def resample_data_or_seg_to_shape(data: np.ndarray, new_shape, current_spacing, new_spacing, is_seg: bool = False,
                                  order: int = 3, order_z: int = 0, force_separate_z: bool | None = False) -> np.ndarray:
    """Resample a C×Z×Y×X array to `new_shape` (spatial)."""
    if hasattr(data, "numpy"):
        data = data.numpy()
    axis = _separate_z_axis(current_spacing, new_spacing, force_separate_z)
    return resample_to_shape(data, new_shape, is_seg, axis, order, order_z)


def _resize_2d_or_3d(arr: np.ndarray, shape, order: int, is_seg: bool) -> np.ndarray:
    if is_seg:
        return resize_segmentation(arr, tuple(int(s) for s in shape), order)
    return resize(arr, tuple(int(s) for s in shape), order, mode="edge", anti_aliasing=False)


def resample_to_shape(data: np.ndarray, new_shape, is_seg: bool = False, axis: int | None = None, order: int = 3,
                      order_z: int = 0) -> np.ndarray:
    assert data.ndim == 4, "data must be C×Z×Y×X"
    shape = np.array(data.shape[1:])
    new_shape = np.array(new_shape, dtype=int)
    if np.all(shape == new_shape):
        return data
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    work = data if is_seg else data.astype(float, copy=False)
    for c in range(data.shape[0]):
        if axis is None:
            out[c] = _resize_2d_or_3d(work[c], new_shape, order, is_seg)
            continue
        inplane = [i for i in range(3) if i != axis]
        tmp_shape = new_shape.copy()
        tmp_shape[axis] = shape[axis]
        stacked = np.zeros(tmp_shape, dtype=work.dtype if is_seg else float)
        for s in range(shape[axis]):
            index = [slice(None)] * 3
            index[axis] = s
            stacked[tuple(index)] = _resize_2d_or_3d(work[c][tuple(index)], new_shape[inplane], order, is_seg)
        if shape[axis] == new_shape[axis]:
            out[c] = stacked
            continue
        scale = np.array(stacked.shape, dtype=float) / new_shape
        grid = np.mgrid[tuple(slice(0, n) for n in new_shape)].astype(float)
        coords = np.stack([scale[i] * (grid[i] + 0.5) - 0.5 for i in range(3)])
        if not is_seg or order_z == 0:
            out[c] = map_coordinates(stacked, coords, order=order_z, mode="nearest")
        else:
            for label in np.unique(stacked):
                hit = map_coordinates((stacked == label).astype(float), coords, order=order_z, mode="nearest")
                out[c][np.round(hit) > 0.5] = label
    return out


def resample_logits_torch(logits, new_shape, current_spacing, new_spacing, order: int = 1, order_z: int = 0,
                          force_separate_z: bool | None = None):
    """`resample_data_or_seg_to_shape` for logits as a torch tensor on any device (linear, or in-plane linear then
    nearest/linear along a coarse axis): the GPU path of prediction export. Returns None for orders it lacks."""
    import torch.nn.functional as F

    new_shape = [int(s) for s in new_shape]
    if list(logits.shape[1:]) == new_shape:
        return logits
    if order != 1 or order_z not in (0, 1) or logits.ndim != 4:
        return None
    axis = _separate_z_axis(current_spacing, new_spacing, force_separate_z)
    x = logits[None].float()
    if axis is None:
        return F.interpolate(x, size=new_shape, mode="trilinear", align_corners=False)[0]
    inplane = list(new_shape)
    inplane[axis] = logits.shape[1 + axis]
    x = F.interpolate(x, size=inplane, mode="trilinear", align_corners=False)  # the coarse axis keeps its grid
    if inplane[axis] != new_shape[axis]:
        x = F.interpolate(x, size=new_shape, mode="nearest-exact" if order_z == 0 else "trilinear",
                          **({} if order_z == 0 else {"align_corners": False}))
    return x[0]
