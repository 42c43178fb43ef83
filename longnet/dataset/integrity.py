"""Dataset integrity verification: read every file once and list every problem, so a user fixes them all in one go.

Structural problems (bad dataset.json, missing channel files, a label without an image, bad patientsTr.json or
visitsTr.csv) are found by `RawDataset` itself and raise `DatasetError`. This module adds the content checks that
need the voxels: readability, dimensionality, geometry agreement between channels and label, channel count,
non-finite or empty/constant images, label values. Files are read with the dataset's reader/writer (see
`longnet.dataset.reader_choice`). Cases are checked in a thread pool (the readers and numpy release the GIL, and
threads avoid the start-up cost and fork hazards of processes).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from longnet.dataset.nifti_raw import nonfinite_counts
from longnet.dataset.raw import Case, RawDataset
from longnet.dataset.reader_choice import raw_dataset_dimension, reader_writer_for_dataset
from longnet.dataset.readers import ImageReaderWriter, SimpleITKIO, props_mismatch
from longnet.errors import DatasetError, IntegrityError

Problem = tuple[str, str]


def _format_values(values, limit: int = 10) -> str:
    values = sorted(values)
    text = ", ".join(str(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"


def dataset_dimension(raw: RawDataset) -> int:
    """The spatial dimension of the dataset, from its images (majority over up to 25 cases, ties going to 3D):
    a single 2D file in a 3D dataset is reported as the odd one out instead of making every other file look
    wrong."""
    return raw_dataset_dimension(raw)


def _read(path: Path, dim: int, problems: list[Problem], rw: ImageReaderWriter,
          is_label: bool = False) -> tuple[np.ndarray, dict] | None:
    """All channels of one file (C×Z×Y×X; labels unchecked floats, so every bad value can be listed)."""
    try:
        data, props = rw.read_seg_values(path, dim) if is_label else rw.read_images([path], dim)
    except DatasetError as e:
        problems.append((str(e.path or path), e.message))
        return None
    return data, props


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


def check_case(case: Case, dim: int, valid_values: set[int], rw: ImageReaderWriter | None = None,
               num_channels: int | None = None) -> list[Problem]:
    """Every problem of one case: its channel files, then its label (if it has one).

    `rw` defaults to SimpleITK; `num_channels` (dataset.json) is checked against what the files hold, since
    one RGB file holds 3 channels."""
    rw = rw or SimpleITKIO()
    problems: list[Problem] = []
    ref = None  # (shape, props, file name) of the first readable channel
    n_read, all_read = 0, True
    for path in case.images:
        got = _read(path, dim, problems, rw)
        if got is None:
            all_read = False
            continue
        arr, props = got
        n_read += arr.shape[0]
        _check_intensities(arr, path, problems)
        if ref is None:
            ref = (arr.shape[1:], props, path.name)
        else:
            diff = props_mismatch(ref[0], ref[1], arr.shape[1:], props)
            if diff:
                problems.append((str(path), f"channel geometry differs from {ref[2]}: {diff}"))
    if num_channels is not None and all_read and n_read != num_channels:
        problems.append((str(case.images[0]), f"case has {n_read} channel(s) in {len(case.images)} file(s) but "
                                              f"dataset.json 'channel_names' lists {num_channels}"))
    if case.label is None:
        return problems
    got = _read(case.label, dim, problems, rw, is_label=True)
    if got is None:
        return problems
    seg, props = got
    seg = seg[0]
    if ref is not None:
        diff = props_mismatch(ref[0], ref[1], seg.shape, props)
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
    rw = reader_writer_for_dataset(raw)
    dim = raw_dataset_dimension(raw, rw)
    valid = set(raw.label_manager.valid_values)
    cases = [raw.cases[c] for c in sorted(raw.cases)]
    n_ch = raw.num_channels
    if num_processes <= 1 or len(cases) <= 1:
        results = [check_case(c, dim, valid, rw, n_ch) for c in cases]
    else:
        with ThreadPoolExecutor(max_workers=num_processes) as ex:
            results = list(ex.map(lambda c: check_case(c, dim, valid, rw, n_ch), cases))
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
