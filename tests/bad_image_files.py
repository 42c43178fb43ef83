"""Image files whose geometry or voxel values are meaningless, built byte by byte where SimpleITK refuses to write
them: NIfTI pixdim of 0/NaN/inf, a header claiming terabytes, complex and 64-bit integer voxels, MetaImage text
headers. Each maker writes `path` and returns the text a refusal must contain."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

ZYX = (10, 12, 8)


def _noise(shape=ZYX) -> np.ndarray:
    return np.random.default_rng(3).normal(100, 10, shape).astype(np.float32)


def write_sitk(path: Path, arr: np.ndarray, spacing=None) -> Path:
    img = sitk.GetImageFromArray(arr)
    if spacing is not None:
        img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def patch_nifti(path: Path, offset: int, fmt: str, *values) -> None:
    """Overwrite NIfTI-1 header bytes at `offset` (little-endian struct `fmt`) in a .nii.gz file."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(gzip.compress(bytes(raw)))


def nifti_spacing_x(value: float, arr: np.ndarray | None = None) -> Callable[[Path], str]:
    """A .nii.gz whose pixdim[1] (x spacing) is `value` (SimpleITK would read 0, NaN and inf as 1 mm)."""
    def make(path: Path) -> str:
        write_sitk(path, _noise() if arr is None else arr)
        patch_nifti(path, 80, "<f", value)
        return f"spacing [{value:g}, 1, 1]"
    return make


def mha_spacing_x(text: str) -> Callable[[Path], str]:
    """A MetaImage (.mha) whose ElementSpacing starts with `text`."""
    def make(path: Path) -> str:
        write_sitk(path.with_suffix(".tmp.mha"), _noise())
        src = path.with_suffix(".tmp.mha")
        data = src.read_bytes().replace(b"ElementSpacing = 1 1 1", f"ElementSpacing = {text} 1 1".encode())
        src.unlink()
        path.write_bytes(data)
        return f"spacing [{float(text):g}, 1, 1]"
    return make


def nifti_huge(path: Path) -> str:
    """A small .nii.gz whose header claims 32767³ float32 voxels (128 TiB)."""
    write_sitk(path, _noise())
    patch_nifti(path, 42, "<hhh", 32767, 32767, 32767)
    return "header claims a 32767×32767×32767 image"


def mha_huge(path: Path) -> str:
    """A MetaImage whose DimSize claims 10⁵ × 10⁵ × 10⁵ voxels."""
    src = path.with_suffix(".tmp.mha")
    write_sitk(src, _noise())
    x, y, z = ZYX[::-1]
    data = src.read_bytes().replace(f"DimSize = {x} {y} {z}".encode(), b"DimSize = 100000 100000 100000")
    src.unlink()
    path.write_bytes(data)
    return "header claims a 100000×100000×100000 image"


def complex_image(path: Path) -> str:
    arr = _noise() + 1j * _noise()
    write_sitk(path, arr.astype(np.complex64))
    return "complex-valued image"


def huge_integers(dtype) -> Callable[[Path], str]:
    """Distinct integers near 2^62 (float32 would merge them)."""
    def make(path: Path) -> str:
        arr = np.full(ZYX, 2 ** 62, dtype)
        arr[::2] += 1
        arr[::3] += 2
        write_sitk(path, arr)
        return f"{np.dtype(dtype).name} voxel values in [{2 ** 62}, {2 ** 62 + 3}] cannot be held exactly as float32"
    return make


# kind -> maker: each plants one file of the listed kind and returns the text of its refusal
BAD_NIFTI_IMAGES: dict[str, Callable[[Path], str]] = {
    "spacing_zero": nifti_spacing_x(0.0),
    "spacing_negative": nifti_spacing_x(-1.5),
    "spacing_nan": nifti_spacing_x(float("nan")),
    "spacing_inf": nifti_spacing_x(float("inf")),
    "spacing_tiny": nifti_spacing_x(1e-6),
    "header_claims_terabytes": nifti_huge,
    "complex_voxels": complex_image,
    "uint64_near_2_62": huge_integers(np.uint64),
    "int64_near_2_62": huge_integers(np.int64),
}
