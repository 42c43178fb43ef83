"""Refuse geometry and voxel values that a reader would otherwise turn into something plausible but wrong.

Every reader class calls these, so the fingerprint, the integrity check, preprocessing, prediction and evaluation
all refuse the same files: a spacing of 0, NaN or inf (ITK reads a NIfTI's as 1 mm), a negative or absurdly small
spacing, complex voxels (the float32 cast would drop the imaginary part), integers float32 cannot hold exactly
(distinct values would collapse into one), and a header that claims an image too large to allocate.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from longnet.errors import DatasetError

#: smallest spacing (mm) accepted; below it a header is broken (or not in mm), and resampling would explode
MIN_SPACING = 1e-4
#: largest integer below which float32 holds every integer exactly
FLOAT32_EXACT = 2 ** 24
#: default limit on the voxel data one file may claim, in GiB (LONGNET_MAX_IMAGE_GIB overrides it)
DEFAULT_MAX_IMAGE_GIB = 16.0

# bytes per component of SimpleITK's pixel ids (scalar, complex, vector and label types)
_SITK_COMPONENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 8, 7: 8, 8: 4, 9: 8, 10: 4, 11: 8, 12: 1, 13: 1,
                         14: 2, 15: 2, 16: 4, 17: 4, 18: 8, 19: 8, 20: 4, 21: 8, 22: 1, 23: 2, 24: 4, 25: 8}
_SITK_COMPLEX = (10, 11)


def max_image_bytes() -> int:
    """The size limit in bytes: real images stay far below it; a corrupt header claiming terabytes does not."""
    text = os.environ.get("LONGNET_MAX_IMAGE_GIB")
    if text is None:
        return int(DEFAULT_MAX_IMAGE_GIB * 2 ** 30)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise DatasetError(f"LONGNET_MAX_IMAGE_GIB must be a positive number of GiB, got {text!r}")
    return int(value * 2 ** 30)


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_image_bytes(size: Sequence[int], bytes_per_voxel: int, path: str | Path, what: str = "") -> None:
    """Refuse a header whose voxel data would exceed the limit, before anything is allocated."""
    n_voxels = math.prod(int(s) for s in size)
    total = n_voxels * int(bytes_per_voxel)
    limit = max_image_bytes()
    if total > limit:
        shape = "×".join(str(int(s)) for s in size)
        raise DatasetError(f"header claims a {shape} image{what} ({_human_bytes(total)} of voxel data), beyond the "
                           f"{_human_bytes(limit)} limit: the header is probably corrupt (a real image this large: "
                           "raise LONGNET_MAX_IMAGE_GIB)", path)


def spacing_problem(spacing: Sequence[float], size: Sequence[int] | None = None) -> str | None:
    """Why `spacing` is meaningless (zero, negative, NaN, inf or below MIN_SPACING), or None.

    With `size` (same axis order), a spacing of exactly 0 along a single-voxel axis is tolerated: a 2D slice stored
    as a one-slice volume often has no slice spacing, and no voxel distance depends on it."""
    bad = []
    for axis, s in enumerate(spacing):
        s = float(s)
        if s == 0 and size is not None and axis < len(size) and int(size[axis]) == 1:
            continue
        if not math.isfinite(s) or s < MIN_SPACING:
            bad.append(s)
    if not bad:
        return None
    shown = "[" + ", ".join(f"{float(s):g}" for s in spacing) + "]"
    reason = ("not finite" if not all(math.isfinite(b) for b in bad) else
              "not positive" if any(b <= 0 for b in bad) else f"below {MIN_SPACING:g} mm")
    return (f"spacing {shown} is {reason} (each must be a finite number >= {MIN_SPACING:g} mm): fix the voxel size "
            "in the header")


def check_spacing(spacing: Sequence[float], path: str | Path, size: Sequence[int] | None = None) -> None:
    problem = spacing_problem(spacing, size)
    if problem:
        raise DatasetError(problem, path)


def check_sitk_header(reader, path: str | Path) -> None:
    """Checks on an `ImageFileReader` after `ReadImageInformation` (no voxel read yet): complex pixels, a size
    beyond the limit, a meaningless spacing."""
    pixel_id = reader.GetPixelIDValue()
    if pixel_id in _SITK_COMPLEX:
        raise DatasetError("complex-valued image: the imaginary part would be lost; store the magnitude (or the "
                           "real and imaginary parts as two channel files)", path)
    bytes_per_voxel = _SITK_COMPONENT_BYTES.get(pixel_id, 8) * max(1, reader.GetNumberOfComponents())
    check_image_bytes(reader.GetSize(), bytes_per_voxel, path)
    check_spacing(reader.GetSpacing(), path, reader.GetSize())


def nifti_spacing(path: str | Path) -> tuple[list[float], list[int]] | None:
    """(pixdim, dim) of the spatial axes (at most 3) straight from a NIfTI-1/2 header, or None if it is not one.

    ITK replaces a pixdim of 0, NaN or inf by 1 and a negative one by its absolute value, so the header is the
    only place where such a spacing is still visible."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for endian in ("<", ">"):
        if len(head) >= 348 and int(np.frombuffer(head[:4], endian + "i4")[0]) == 348:
            dims = np.frombuffer(head[40:56], endian + "i2").astype(np.int64)
            pixdim = np.frombuffer(head[76:108], endian + "f4").astype(np.float64)
            break
        if len(head) >= 540 and int(np.frombuffer(head[:4], endian + "i4")[0]) == 540:
            dims = np.frombuffer(head[16:80], endian + "i8")
            pixdim = np.frombuffer(head[104:168], endian + "f8")
            break
    else:
        return None
    n = int(dims[0])
    if not 1 <= n <= 7:
        return None
    n = min(n, 3)
    return [float(p) for p in pixdim[1:1 + n]], [int(d) for d in dims[1:1 + n]]


def check_nifti_spacing(path: str | Path) -> None:
    """Refuse a NIfTI file whose header spacing ITK would silently replace (see `nifti_spacing`)."""
    found = nifti_spacing(path)
    if found is not None:
        check_spacing(found[0], path, found[1])


def check_voxel_values(arr: np.ndarray, path: str | Path) -> None:
    """Refuse voxels that the float32 arrays longnet computes with cannot represent: complex values, and integers
    beyond ±2^24 that float32 would round (so that distinct values, e.g. label ids, would merge)."""
    if np.iscomplexobj(arr):
        raise DatasetError("complex-valued image: the imaginary part would be lost; store the magnitude (or the "
                           "real and imaginary parts as two channel files)", path)
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize < 4 or arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if -FLOAT32_EXACT <= lo and hi <= FLOAT32_EXACT:
        return
    inexact = arr[~_exact_in_float32(arr)]
    if inexact.size:
        raise DatasetError(f"{arr.dtype} voxel values in [{lo}, {hi}] cannot be held exactly as float32 (e.g. "
                           f"{int(inexact.flat[0])}; integers beyond ±2^24 = {FLOAT32_EXACT} are rounded and distinct "
                           "values merged): rescale the image or store it as float", path)


def _exact_in_float32(values: np.ndarray) -> np.ndarray:
    """Per integer: whether float32 holds it exactly, i.e. it is m·2^k with an odd m below 2^24 (integer
    arithmetic throughout, since float64 itself rounds beyond 2^53)."""
    v = values.astype(np.int64 if values.dtype.kind == "i" else np.uint64, copy=False)
    mag = v.view(np.uint64) if v.dtype.kind == "u" else np.where(v < 0, ~v.view(np.uint64) + np.uint64(1),
                                                                   v.view(np.uint64))
    lowest_bit = mag & (~mag + np.uint64(1))
    return (mag == 0) | (mag // np.maximum(lowest_bit, np.uint64(1)) < np.uint64(FLOAT32_EXACT))


def check_tiff_header(path: str | Path) -> None:
    """TIFF: complex samples and a claimed size beyond the limit, from the header before the pixels are read
    (a file tifffile cannot parse is left to the reader, which names the problem)."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
    except Exception:  # tifffile raises many types for a corrupt file
        return
    if dtype.kind == "c":
        raise DatasetError("complex-valued image: the imaginary part would be lost; store the magnitude (or the "
                           "real and imaginary parts as two channel files)", path)
    check_image_bytes(shape, dtype.itemsize, path)


def check_pil_header(image, path: str | Path) -> None:
    """PNG/BMP opened lazily by Pillow: refuse a claimed size beyond the limit before the pixels are decoded."""
    bytes_per_band = 2 if image.mode.startswith("I;16") else 4 if image.mode in ("I", "F") else 1
    check_image_bytes((*image.size, len(image.getbands())), bytes_per_band, path)
