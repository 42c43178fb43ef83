"""Reading crops of preprocessed cases: only the requested box is decompressed, padding is added outside.

Data is padded with 0 and segmentations with -1 (the "outside the nonzero mask" value), as nnU-Net does.
"""
from __future__ import annotations

from pathlib import Path

import blosc2
import numpy as np

from longnet.errors import DatasetError
from longnet.io.storage import case_paths
from longnet.utils.files import load_json


def open_array(path: Path):
    """A lazily decompressed blosc2 array (slicing reads only the chunks it needs)."""
    if not path.is_file():
        raise DatasetError("preprocessed array not found (run longnet_preprocess)", path)
    try:
        return blosc2.open(str(path), mode="r", mmap_mode="r")
    except Exception as e:  # blosc2 raises several types for corrupt files
        raise DatasetError(f"corrupt preprocessed array ({type(e).__name__}: {e})", path) from None


class CaseReader:
    """Opens cases of one preprocessed configuration folder (e.g. nnUNetPlans_3d_fullres)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def properties(self, case_id: str) -> dict:
        return load_json(case_paths(self.folder, case_id)["props"])

    def open(self, case_id: str):
        """(data, seg, props) with data/seg as lazily read blosc2 arrays."""
        p = case_paths(self.folder, case_id)
        return open_array(p["data"]), open_array(p["seg"]), load_json(p["props"])

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(data, seg, props) fully decompressed into numpy."""
        data, seg, props = self.open(case_id)
        return np.asarray(data[...]), np.asarray(seg[...]), props


def crop_and_pad(arr, lo: list[int], size: list[int], pad_value: float) -> np.ndarray:
    """Read the box [lo, lo+size) of the spatial axes of a C×... array; parts outside get `pad_value`."""
    shape = arr.shape[1:]
    valid_lo = [max(0, l) for l in lo]
    valid_hi = [min(s, l + n) for s, l, n in zip(shape, lo, size)]
    dtype = np.result_type(arr.dtype, np.min_scalar_type(pad_value))  # -1 padding of a uint8 map needs a sign
    out = np.full((arr.shape[0], *size), pad_value, dtype=dtype)
    if any(h <= l for l, h in zip(valid_lo, valid_hi)):
        return out
    src = (slice(None), *[slice(l, h) for l, h in zip(valid_lo, valid_hi)])
    dst = (slice(None), *[slice(vl - l, vh - l) for vl, vh, l in zip(valid_lo, valid_hi, lo)])
    out[dst] = arr[src]
    return out


def bbox_for_patch(shape: tuple[int, ...], patch: list[int], rng: np.random.Generator,
                   center_voxel: list[int] | None = None, extra_pad: list[int] | None = None) -> list[int]:
    """Lower corner of a patch box: random within the allowed range, or centred on `center_voxel`.

    `extra_pad` (enlarged minus final patch size) lets the box reach past the border by half of it, so that the
    final patch cut from its centre can touch the image border; images smaller than the patch are padded.
    Same ranges as nnU-Net's data loader.
    """
    extra = list(extra_pad) if extra_pad is not None else [0] * len(shape)
    need_pad = [max(e, p - s) for s, p, e in zip(shape, patch, extra)]
    lbs = [-(n // 2) for n in need_pad]
    ubs = [s + n // 2 + n % 2 - p for s, n, p in zip(shape, need_pad, patch)]
    if center_voxel is None:
        return [int(rng.integers(l, u + 1)) for l, u in zip(lbs, ubs)]
    return [int(max(c - p // 2, l)) for c, p, l in zip(center_voxel, patch, lbs)]
