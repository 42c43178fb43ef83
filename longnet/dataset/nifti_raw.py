"""Raw-byte checks on NIfTI files for two kinds of corruption that ITK's NIfTI reader (ITK <= 5.4, so SimpleITK
2.5) hides: a truncated file is read without error (missing voxels come back as 0 or garbage), and NaN/±inf voxels
are silently replaced by 0. Only the header and, where needed, the voxel bytes are read; nothing here decodes the
image geometry (SimpleITK stays the reader)."""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FLOAT_TYPES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # float32, float64, complex64/128 (as value pairs)
_COMPLEX = (32, 1792)


@dataclass
class NiftiHeader:
    endian: str
    datatype: int
    bitpix: int
    dims: tuple[int, ...]
    vox_offset: int

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * self.bitpix // 8


def is_nifti(path: str | Path) -> bool:
    return str(path).endswith((".nii", ".nii.gz"))


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def read_header(path: str | Path) -> NiftiHeader | None:
    """Parse the fields needed to locate the voxel data (NIfTI-1 or -2, either byte order); None if not NIfTI."""
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        size = int(np.frombuffer(head[:4], endian + "i4")[0])
        if size == 348:
            dims = np.frombuffer(head[40:56], endian + "i2").astype(np.int64)
            datatype, bitpix = (int(x) for x in np.frombuffer(head[70:74], endian + "i2"))
            offset = int(np.frombuffer(head[108:112], endian + "f4")[0])
            break
        if size == 540 and len(head) >= 540:
            dims = np.frombuffer(head[16:80], endian + "i8")
            datatype, bitpix = (int(x) for x in np.frombuffer(head[12:16], endian + "i2"))
            offset = int(np.frombuffer(head[168:176], endian + "i8")[0])
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    return NiftiHeader(endian, datatype, bitpix, tuple(int(max(d, 1)) for d in dims[1: 1 + dims[0]]), max(offset, 0))


def _stream_data(path: Path, header: NiftiHeader, chunk_bytes: int = 1 << 24):
    """Yield the voxel bytes in chunks (possibly fewer than header.data_bytes if the file is short)."""
    with _open(path) as f:
        skip = header.vox_offset
        while skip > 0:
            got = f.read(min(skip, chunk_bytes))
            if not got:
                return
            skip -= len(got)
        remaining = header.data_bytes
        while remaining > 0:
            got = f.read(min(remaining, chunk_bytes))
            if not got:
                return
            remaining -= len(got)
            yield got


def truncation_problem(path: str | Path) -> str | None:
    """Describe why a NIfTI file is incomplete (cut short, corrupt gzip stream), or None if its data is all there.

    Cheap in the normal case: .nii compares the file size, .nii.gz the gzip trailer's length field; only when
    that disagrees is the stream decompressed to make sure.
    """
    path = Path(path)
    header = read_header(path)
    if header is None:
        return None
    expected = header.vox_offset + header.data_bytes
    if not path.name.endswith(".gz"):
        size = os.path.getsize(path)
        return None if size >= expected else f"file is truncated ({size} of at least {expected} bytes)"
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if isize == expected % (1 << 32):
        return None
    got = header.vox_offset
    try:
        for chunk in _stream_data(path, header):
            got += len(chunk)
    except EOFError:
        return "file is truncated (the compressed stream ends early)"
    except (OSError, zlib.error) as e:
        return f"compressed data is corrupt ({e})"
    if got < expected:
        return f"file is truncated ({got} of {expected} bytes of header and voxel data)"
    return None


def nonfinite_counts(path: str | Path) -> tuple[int, int] | None:
    """(NaN count, ±inf count) of a float NIfTI file from its raw bytes; None if not a float NIfTI or unreadable."""
    path = Path(path)
    header = read_header(path)
    if header is None or header.datatype not in _FLOAT_TYPES:
        return None
    dtype = np.dtype(header.endian + _FLOAT_TYPES[header.datatype])
    n_nan = n_inf = 0
    rest = b""
    try:
        for chunk in _stream_data(path, header):
            buf = rest + chunk
            usable = len(buf) // dtype.itemsize * dtype.itemsize
            arr = np.frombuffer(buf[:usable], dtype)
            n_nan += int(np.isnan(arr).sum())
            n_inf += int(np.isinf(arr).sum())
            rest = buf[usable:]
    except (OSError, EOFError, zlib.error):
        return None
    return n_nan, n_inf
