"""Dataset fingerprint: nnU-Net's fields plus longitudinal statistics.

Foreground intensity statistics follow nnU-Net's estimator (per case, a budget of 1e8 / n_cases foreground
voxels drawn with replacement with seed 1234), but the draws are kept as counts per voxel instead of a
materialised 1e8-element array, and order statistics are read from the weighted sorted values: the same
numbers at a fraction of the memory and time.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from longnet.dataset.nifti_raw import is_nifti, nonfinite_counts
from longnet.dataset.reader_choice import (check_channel_count, raw_dataset_dimension, reader_writer_by_name,
                                           reader_writer_for_dataset)
from longnet.dataset.readers import ImageReaderWriter, props_mismatch
from longnet.errors import DatasetError
from longnet.dataset.raw import RawDataset
from longnet.imaging.cropping import crop_to_nonzero

FOREGROUND_SAMPLE_BUDGET = 10e7
PERCENTILES = (0.5, 50.0, 99.5)


def as_reader_writer(reader: str | ImageReaderWriter) -> ImageReaderWriter:
    """Jobs for worker processes carry the class name; resolve it (instances pass through)."""
    return reader if isinstance(reader, ImageReaderWriter) else reader_writer_by_name(reader)


def read_checked_images(image_files, dim: int | None, reader: str | ImageReaderWriter = "SimpleITKIO",
                        num_channels: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a case's channel files with the dataset's reader and check the channel count against dataset.json."""
    data, props = as_reader_writer(reader).read_images(image_files, dim)
    if num_channels is not None:
        check_channel_count(data.shape[0], image_files, num_channels)
    return data, props


def analyze_case(image_files, label_file, samples_per_case: int, dim: int = 3, valid_labels=None,
                 reader: str | ImageReaderWriter = "SimpleITKIO", num_channels: int | None = None):
    data, props = read_checked_images(image_files, dim, reader, num_channels)
    seg = load_checked_seg(label_file, data, props, dim, valid_labels, reader) if label_file is not None else None
    check_finite(data, image_files, raw_bytes=True)  # the fingerprint reads every case first: refuse NaN here
    shape_before = data.shape[1:]
    data, seg_c, _ = crop_to_nonzero(data, seg)
    per_channel = []
    if seg is not None:
        fg = seg_c[0] > 0
        rs = np.random.RandomState(1234)
        for c in range(data.shape[0]):
            values = data[c][fg]
            if values.size == 0:
                per_channel.append((np.zeros(0, np.float32), np.zeros(0, np.int64)))
                continue
            idx = rs.randint(0, values.size, size=samples_per_case)
            counts = np.bincount(idx, minlength=values.size)
            keep = counts > 0
            per_channel.append((values[keep], counts[keep]))
    rel_size = float(np.prod(data.shape[1:], dtype=np.float64) / np.prod(shape_before, dtype=np.float64))
    return [int(s) for s in data.shape[1:]], props["spacing"], per_channel, rel_size


def _nonfinite_text(data: np.ndarray, path, raw_bytes: bool) -> str | None:
    """'2 NaN and 1 inf' for an array, or from a NIfTI file's bytes when the array shows none (SimpleITK, ITK <=
    5.4, reads those voxels as 0). Integer NIfTI files cost one header read; float ones one more decompression."""
    n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
    if raw_bytes and not (n_nan or n_inf) and is_nifti(path):
        n_nan, n_inf = nonfinite_counts(path) or (0, 0)
    parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "inf")) if n]
    return " and ".join(parts) or None


def check_finite(data: np.ndarray, image_files, raw_bytes: bool = False) -> None:
    """NaN/inf voxels would silently poison normalisation statistics: refuse them, naming the channel file.

    `raw_bytes` also checks NIfTI files byte-wise, since the decoded array no longer shows them."""
    for c in range(data.shape[0]):
        # one file per channel, except multi-channel (RGB) files: their integer voxels are always finite
        path = image_files[c] if len(image_files) == data.shape[0] else image_files[0]
        bad = _nonfinite_text(data[c], path, raw_bytes)
        if bad:
            raise DatasetError(f"image contains {bad} voxel(s)", path)


def load_checked_seg(label_file, data: np.ndarray, props: dict, dim: int | None, valid_labels,
                     reader: str | ImageReaderWriter = "SimpleITKIO") -> np.ndarray:
    seg, seg_props = as_reader_writer(reader).read_seg(label_file, dim)
    bad = _nonfinite_text(seg[:0], label_file, True)  # NaN reads as 0 (background): would pass as a label
    if bad:
        raise DatasetError(f"label map contains {bad} voxel(s)", label_file)
    problem = props_mismatch(data.shape[1:], props, seg.shape[1:], seg_props)
    if problem:
        raise DatasetError(f"label geometry differs from its image: {problem}", label_file)
    if valid_labels is not None:
        bad = sorted(set(np.unique(seg).tolist()) - set(valid_labels))
        if bad:
            raise DatasetError(f"label values {bad} are not declared in dataset.json (allowed: {sorted(valid_labels)})",
                               label_file)
    return seg


def weighted_statistics(values: np.ndarray, counts: np.ndarray) -> dict:
    """Mean/std/min/max/percentiles of the multiset where values[i] occurs counts[i] times (numpy 'linear')."""
    order = np.argsort(values, kind="stable")
    v = values[order].astype(np.float64)
    c = counts[order]
    cum = np.cumsum(c)
    n = int(cum[-1])

    def at_rank(k: int) -> float:
        return float(v[np.searchsorted(cum, k, side="right")])

    out = {}
    for q, key in zip(PERCENTILES, ("percentile_00_5", "median", "percentile_99_5")):
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        frac = pos - lo
        a, b = at_rank(lo), at_rank(min(lo + 1, n - 1))
        out[key] = float(np.float32(a + (b - a) * frac))
    mean = float(np.sum(v * c) / n)
    out["mean"] = float(np.float32(mean))
    out["std"] = float(np.float32(np.sqrt(np.sum(c * (v - mean) ** 2) / n)))
    out["min"] = float(v[0])
    out["max"] = float(v[-1])
    return {k: out[k] for k in ("max", "mean", "median", "min", "percentile_00_5", "percentile_99_5", "std")}


def _visit_statistics(raw: RawDataset) -> dict:
    visits = [len(v) for v in raw.subjects.values()]
    gaps = []
    for cases in raw.subjects.values():
        days = [raw.cases[c].days for c in cases]
        gaps += [b - a for a, b in zip(days, days[1:])]
    n = len(raw.cases)

    def summary(x):
        if not x:
            return None
        x = np.asarray(x, float)
        return {"min": float(x.min()), "median": float(np.median(x)), "mean": float(x.mean()), "max": float(x.max())}

    return {
        "num_subjects": len(raw.subjects),
        "num_cases": n,
        "num_labelled_cases": len(raw.labelled_cases),
        "labelled_fraction": len(raw.labelled_cases) / n if n else 0.0,
        "visits_per_subject": summary(visits),
        "days_between_visits": summary(gaps),
        "subjects_with_multiple_visits": int(sum(v > 1 for v in visits)),
    }


def extract_fingerprint(raw: RawDataset, num_processes: int = 2, verbose: bool = True) -> dict:
    """Compute the fingerprint of a raw dataset (all cases contribute shapes/spacings; labelled ones intensities)."""
    rw = reader_writer_for_dataset(raw)
    dim = raw_dataset_dimension(raw, rw)  # from the images: a 2D file makes a 2D dataset
    ids = list(raw.cases)
    n_labelled = max(1, len(raw.labelled_cases))
    samples = int(FOREGROUND_SAMPLE_BUDGET // n_labelled)
    valid = sorted(raw.label_manager.valid_values)
    jobs = [(raw.cases[c].images, raw.cases[c].label, samples, dim, valid, rw.name, raw.num_channels) for c in ids]
    results = parallel_map(analyze_case, jobs, num_processes, "fingerprint", verbose)
    num_channels = raw.num_channels
    stats = {}
    for ch in range(num_channels):
        vals = [r[2][ch][0] for r in results if r[2]]
        cnts = [r[2][ch][1] for r in results if r[2]]
        if vals and sum(len(v) for v in vals):
            stats[str(ch)] = weighted_statistics(np.concatenate(vals), np.concatenate(cnts))
        else:
            stats[str(ch)] = {k: float("nan") for k in ("max", "mean", "median", "min", "percentile_00_5",
                                                        "percentile_99_5", "std")}
    return {
        "foreground_intensity_properties_per_channel": stats,
        "median_relative_size_after_cropping": float(np.median([r[3] for r in results])),
        "shapes_after_crop": [r[0] for r in results],
        "spacings": [r[1] for r in results],
        "case_identifiers": ids,
        "longitudinal": _visit_statistics(raw),
    }


def _star(args):
    fn, a = args
    return fn(*a)


def parallel_map(fn, jobs: list, num_processes: int, desc: str, verbose: bool) -> list:
    """Order-preserving parallel map with a progress bar; single-process when num_processes <= 1."""
    if num_processes <= 1 or len(jobs) <= 1:
        return [fn(*j) for j in tqdm(jobs, desc=desc, disable=not verbose)]
    ctx = get_context("fork") if os.name == "posix" else get_context("spawn")
    with ProcessPoolExecutor(num_processes, mp_context=ctx) as ex:
        chunks = max(1, len(jobs) // (num_processes * 8))
        return list(tqdm(ex.map(_star, [(fn, j) for j in jobs], chunksize=chunks), total=len(jobs), desc=desc,
                         disable=not verbose))
