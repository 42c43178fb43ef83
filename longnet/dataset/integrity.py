"""Dataset integrity verification: read every file once and list every problem, so a user fixes them all in one go.

Structural problems (bad dataset.json, missing channel files, a label without an image, bad patientsTr.json or
visitsTr.csv) are found by `RawDataset` itself and raise `DatasetError`. This module adds the content checks that
need the voxels: readability, dimensionality, geometry agreement between channels and label, non-finite or
empty/constant images, label values. Cases are checked in a thread pool (SimpleITK and numpy release the GIL, and
threads avoid the start-up cost and fork hazards of processes).
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from longnet.dataset.io import geometry_mismatch, read_image_files
from longnet.dataset.nifti_raw import nonfinite_counts
from longnet.dataset.raw import Case, RawDataset
from longnet.errors import DatasetError, IntegrityError

Problem = tuple[str, str]

_TWO_D_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


def _format_values(values, limit: int = 10) -> str:
    values = sorted(values)
    text = ", ".join(str(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"


def _header_dimension(path: Path) -> int | None:
    """Dimension from the file header only (cheap); None if the header cannot be read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader.GetDimension()


def dataset_dimension(raw: RawDataset) -> int:
    """The spatial dimension of the dataset: 2 for natural-image endings, else the majority over case headers.

    A majority vote (ties go to 3D) means a single 2D file in a 3D dataset is reported as the odd one out
    instead of making every other file look wrong.
    """
    if raw.file_ending.lower() in _TWO_D_ENDINGS or str(raw.dataset_json.get("tensorImageSize", "")).upper() == "2D":
        return 2
    cases = list(raw.cases.values())
    sample = cases[:: max(1, len(cases) // 25)]  # header reads are not free; 25 files settle a majority
    votes = Counter(d for d in (_header_dimension(c.images[0]) for c in sample) if d in (2, 3))
    if votes.get(2, 0) > votes.get(3, 0):
        return 2
    return 3


def _read(path: Path, dim: int, problems: list[Problem]) -> tuple[np.ndarray, dict] | None:
    try:
        data, props = read_image_files([path], expected_dim=dim)
    except DatasetError as e:
        problems.append((str(e.path or path), e.message))
        return None
    return data[0], props


def _nonfinite(arr: np.ndarray, path: Path) -> tuple[int, int]:
    """(NaN count, inf count): from the raw bytes for NIfTI (SimpleITK reads those voxels as 0), else the array."""
    counts = nonfinite_counts(path)
    finite = np.isfinite(arr)
    n_nan = int(np.isnan(arr).sum()) if not finite.all() else 0
    n_inf = int(arr.size - finite.sum()) - n_nan
    if counts is not None:
        n_nan, n_inf = max(n_nan, counts[0]), max(n_inf, counts[1])
    return n_nan, n_inf


def _describe_nonfinite(n_nan: int, n_inf: int) -> str:
    return " and ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else "") if s)


def _check_intensities(arr: np.ndarray, path: Path, problems: list[Problem]) -> None:
    n_nan, n_inf = _nonfinite(arr, path)
    if n_nan or n_inf:
        problems.append((str(path), f"image contains {_describe_nonfinite(n_nan, n_inf)} voxel(s)"))
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi == 0:
        problems.append((str(path), "image is empty (every voxel is 0)"))
    elif lo == hi:
        problems.append((str(path), f"image is constant (every voxel is {lo:g})"))


def check_case(case: Case, dim: int, valid_values: set[int]) -> list[Problem]:
    """Every problem of one case: its channel files, then its label (if it has one)."""
    problems: list[Problem] = []
    ref = None  # (shape, geometry, file name) of the first readable channel
    for path in case.images:
        got = _read(path, dim, problems)
        if got is None:
            continue
        arr, props = got
        _check_intensities(arr, path, problems)
        if ref is None:
            ref = (arr.shape, props["sitk_stuff"], path.name)
        else:
            diff = geometry_mismatch(ref[0], ref[1], arr.shape, props["sitk_stuff"])
            if diff:
                problems.append((str(path), f"channel geometry differs from {ref[2]}: {diff}"))
    if case.label is None:
        return problems
    got = _read(case.label, dim, problems)
    if got is None:
        return problems
    seg, props = got
    if ref is not None:
        diff = geometry_mismatch(ref[0], ref[1], seg.shape, props["sitk_stuff"])
        if diff:
            problems.append((str(case.label), f"label geometry differs from image {ref[2]}: {diff}"))
    n_nan, n_inf = _nonfinite(seg, case.label)
    if n_nan or n_inf:
        problems.append((str(case.label), f"label map contains {_describe_nonfinite(n_nan, n_inf)} voxel(s)"))
    seg = seg[np.isfinite(seg)]
    values = np.unique(seg)
    non_int = values[values != np.round(values)]
    if non_int.size:
        problems.append((str(case.label), f"label map contains non-integer values {_format_values(non_int.tolist())}"))
        values = values[values == np.round(values)]
    bad = sorted(set(int(v) for v in values) - set(valid_values))
    if bad:
        problems.append((str(case.label), f"label values {_format_values(bad)} are not declared in dataset.json "
                                          f"'labels' (allowed: {_format_values(valid_values)})"))
    return problems


def _dataset_level(raw: RawDataset) -> list[Problem]:
    problems: list[Problem] = []
    if raw.side != "Tr":
        return problems
    src = str(raw.dataset_json_path)
    n_found = len(raw.cases)
    if "numTraining" not in raw.dataset_json:
        problems.append((src, f"missing key 'numTraining' (nnU-Net requires it; images{raw.side}/ holds {n_found} cases)"))
        return problems
    declared = raw.dataset_json["numTraining"]
    if declared != n_found:
        unl = raw.unlabelled_cases
        detail = f"{len(raw.labelled_cases)} labelled, {len(unl)} unlabelled"
        if unl:
            detail += ": " + ", ".join(unl[:5]) + (", ..." if len(unl) > 5 else "")
        problems.append((src, f"numTraining is {declared} but images{raw.side}/ holds {n_found} cases ({detail}); "
                              "nnU-Net counts every case that has images, labelled or not"))
    return problems


def verify_dataset_integrity(raw: RawDataset, num_processes: int = 2) -> list[Problem]:
    """Check every file of the dataset and return all problems as (file path, message), in case order.

    `num_processes` is the number of worker threads (1 = check inline).
    """
    problems = _dataset_level(raw)
    dim = dataset_dimension(raw)
    valid = set(raw.label_manager.valid_values)
    cases = [raw.cases[c] for c in sorted(raw.cases)]
    if num_processes <= 1 or len(cases) <= 1:
        results = [check_case(c, dim, valid) for c in cases]
    else:
        with ThreadPoolExecutor(max_workers=num_processes) as ex:
            results = list(ex.map(lambda c: check_case(c, dim, valid), cases))
    for r in results:
        problems.extend(r)
    return problems


def check_dataset(folder: str | Path, num_processes: int = 2, side: str = "Tr") -> RawDataset:
    """Index the dataset (structural errors raise DatasetError) and raise IntegrityError listing every content problem."""
    raw = RawDataset(folder, side=side)
    problems = verify_dataset_integrity(raw, num_processes=num_processes)
    if problems:
        raise IntegrityError(problems)
    return raw
