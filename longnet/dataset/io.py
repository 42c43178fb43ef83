"""Image IO through SimpleITK. Arrays are channel-first in numpy (z, y, x) order, as nnU-Net stores them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from longnet.dataset.nifti_raw import is_nifti, truncation_problem
from longnet.dataset.value_checks import check_nifti_spacing, check_sitk_header, check_voxel_values
from longnet.errors import DatasetError

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".gipl", ".gipl.gz")


def checked_header(path: str | Path) -> sitk.ImageFileReader:
    """The header of an image file, without its voxels: existing, readable, with a sane spacing, size and pixel
    type, and (NIfTI) not cut short. Cheap, so a whole folder can be checked before anything is written."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("file not found", path)
    if is_nifti(path):
        check_nifti_spacing(path)  # ITK would read a pixdim of 0, NaN or inf as 1 mm
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise DatasetError(f"unreadable image file ({_itk_detail(e)})", path) from None
    check_sitk_header(reader, path)  # complex pixels, an absurd size or spacing: refused before allocating
    if is_nifti(path):  # ITK reads a cut-short NIfTI without complaint, padding the missing voxels
        problem = truncation_problem(path)
        if problem:
            raise DatasetError(f"unreadable image file ({problem})", path)
    return reader


def _itk_detail(error: RuntimeError) -> str:
    """The line of ITK's multi-line exception text that says what went wrong."""
    lines = str(error).strip().splitlines()
    detail = next((line for line in lines if "ERROR" in line or "exception" in line.lower()), lines[-1] if lines else "")
    return detail.strip()[:200]


def _read_one(path: Path) -> sitk.Image:
    reader = checked_header(path)
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise DatasetError(f"unreadable image file ({_itk_detail(e)})", path) from None


def geometry_of(img: sitk.Image) -> dict:
    return {
        "spacing": list(img.GetSpacing()),
        "origin": list(img.GetOrigin()),
        "direction": list(img.GetDirection()),
    }


def read_image_files(files: Sequence[str | Path], expected_dim: int | None = 3,
                     orientation: str | None = None) -> tuple[np.ndarray, dict]:
    """Read one file per channel into a float32 array C×Z×Y×X plus its geometry (`sitk_stuff`, `spacing`).

    `expected_dim` None takes the first file's dimension. A 2D image becomes 1×1×Y×X with spacing
    (999·max, sy, sx), as nnU-Net does, so it is never resampled across its single slice. `orientation`
    (e.g. "RAS") reorients 3D images first; `original_orientation` then records how to turn them back.
    Raises DatasetError naming the file on unreadable files, wrong dimensionality, or channels whose
    geometry disagrees.
    """
    if len(files) == 0:
        raise ValueError("read_image_files needs at least one file")
    arrays, geometries = [], []
    original_orientation = None
    for f in files:
        path = Path(f)
        img = _read_one(path)
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise DatasetError(f"vector image with {img.GetNumberOfComponentsPerPixel()} components per voxel; "
                               "store each channel as its own file", path)
        if expected_dim is None:
            expected_dim = img.GetDimension()
        if orientation is not None and img.GetDimension() == 3:
            original_orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())
            img = sitk.DICOMOrient(img, orientation)
        if img.GetDimension() != expected_dim:
            raise DatasetError(f"image is {img.GetDimension()}D but the dataset is {expected_dim}D", path)
        arr = sitk.GetArrayFromImage(img)
        check_voxel_values(arr, path)  # integers that the float32 cast below would merge
        geometries.append(geometry_of(img))
        arrays.append(arr)
    ref = geometries[0]
    for f, g, a in zip(files[1:], geometries[1:], arrays[1:]):
        problem = geometry_mismatch(arrays[0].shape, ref, a.shape, g)
        if problem:
            raise DatasetError(f"channel geometry differs from {Path(files[0]).name}: {problem}", f)
    data = np.stack(arrays).astype(np.float32, copy=False)
    if expected_dim == 2:
        data = data[:, None]
    spacing = list(ref["spacing"])[::-1]
    if expected_dim == 2:
        spacing = [999.0 * max(spacing)] + spacing
    props = {"sitk_stuff": ref, "spacing": [float(s) for s in spacing]}
    if original_orientation is not None:
        props["original_orientation"] = original_orientation
    return data, props


def read_seg_file(path: str | Path, expected_dim: int | None = 3) -> tuple[np.ndarray, dict]:
    """Read a label map as int16 1×Z×Y×X; non-integer values are an error."""
    data, props = read_image_files([path], expected_dim)
    return checked_label_values(data, path), props


def checked_label_values(data: np.ndarray, path: str | Path) -> np.ndarray:
    """A label map read as floats, as int16 once every value is a finite integer in range (else DatasetError)."""
    if not np.all(np.isfinite(data)):
        raise DatasetError("label map contains non-integer values (NaN/inf)", path)
    fractions = np.unique(data[data != np.round(data)])
    if fractions.size:  # name a few, as integrity verification does, so the message points at the problem
        shown = ", ".join(f"{v:g}" for v in fractions[:10].tolist()) + (", ..." if fractions.size > 10 else "")
        raise DatasetError(f"label map contains non-integer values [{shown}]", path)
    lo, hi = data.min(initial=0), data.max(initial=0)
    if lo < np.iinfo(np.int16).min or hi > np.iinfo(np.int16).max:
        raise DatasetError(f"label values out of range for a label map (min {lo:g}, max {hi:g})", path)
    return data.astype(np.int16)


def write_seg(seg: np.ndarray, dest: str | Path, props: dict) -> None:
    """Write a Z×Y×X label map with the geometry in props['sitk_stuff'], atomically.

    A 2D input (2-element spacing) gets back the singleton z axis it was given when read."""
    seg = np.asarray(seg)
    if seg.ndim == 4 and seg.shape[0] == 1:
        seg = seg[0]
    if seg.ndim == 3 and seg.shape[0] == 1 and len(props["sitk_stuff"]["spacing"]) == 2:
        seg = seg[0]
    dtype = np.uint8 if seg.max(initial=0) < 255 and seg.min(initial=0) >= 0 else np.int16
    write_image(seg.astype(dtype), dest, props)


def write_image(arr: np.ndarray, dest: str | Path, props: dict) -> None:
    from longnet.utils.files import atomic_path

    dest = Path(dest)
    img = sitk.GetImageFromArray(arr)
    g = props["sitk_stuff"]
    img.SetSpacing([float(s) for s in g["spacing"]])
    img.SetOrigin([float(s) for s in g["origin"]])
    img.SetDirection([float(s) for s in g["direction"]])
    if props.get("original_orientation") and img.GetDimension() == 3:  # undo the reorientation done when reading
        img = sitk.DICOMOrient(img, props["original_orientation"])
    ending = file_ending_of(dest)
    with atomic_path(dest, suffix=ending) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def file_ending_of(path: str | Path) -> str:
    name = Path(path).name
    for e in sorted(SUPPORTED_ENDINGS, key=len, reverse=True):
        if name.endswith(e):
            return e
    return Path(path).suffix


def geometry_mismatch(shape_a, geom_a: dict, shape_b, geom_b: dict, tol: float = 1e-3) -> str | None:
    """Describe how image b's grid differs from image a's (size, spacing, origin, direction), or None if they agree.

    Every differing aspect is listed ("; "-separated) so one message tells the user the whole story.
    """
    diffs = []
    if tuple(shape_a) != tuple(shape_b):
        diffs.append(f"size {tuple(shape_b)[::-1]} vs {tuple(shape_a)[::-1]}")
    for key in ("spacing", "origin", "direction"):
        a, b = np.asarray(geom_a[key], float), np.asarray(geom_b[key], float)
        if a.shape != b.shape:
            diffs.append(f"{key} {np.round(b, 4).tolist()} vs {np.round(a, 4).tolist()}")
            continue
        scale = 1.0 if key == "direction" else np.maximum(1.0, np.abs(a))
        if np.any(np.abs(a - b) > tol * scale):
            diffs.append(f"{key} {np.round(b, 4).tolist()} vs {np.round(a, 4).tolist()}")
    return "; ".join(diffs) or None
