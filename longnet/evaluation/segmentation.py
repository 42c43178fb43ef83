"""Segmentation metrics and `summary.json` in nnU-Net's schema (plus median, HD95 and volumes).

Dice/IoU follow nnU-Net: per label (or region), voxels under the ignore label excluded, and a label absent
from both prediction and reference gives NaN, which the per-label means skip (`foreground_mean`, a plain
mean over the labels' means, does not).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from longnet.errors import LongnetError
from longnet.utils.parallel import map_processes

LabelOrRegion = int | tuple[int, ...]


def key_of(label_or_region: LabelOrRegion) -> str:
    """JSON key nnU-Net uses: '1' for a label, '(1, 2)' for a region."""
    if isinstance(label_or_region, (list, tuple)):
        return str(tuple(int(x) for x in label_or_region))
    return str(int(label_or_region))


def region_mask(seg: np.ndarray, label_or_region: LabelOrRegion) -> np.ndarray:
    if isinstance(label_or_region, (list, tuple)):
        return np.isin(seg, np.asarray(label_or_region))
    return seg == label_or_region


def confusion(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """TP/FP/FN/TN, n_pred, n_ref of two boolean masks restricted to `valid`."""
    if valid is not None:
        pred, ref = pred & valid, ref & valid
        total = int(valid.sum())
    else:
        total = int(pred.size)
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    return {"TP": tp, "FP": fp, "FN": fn, "TN": total - tp - fp - fn, "n_pred": n_pred, "n_ref": n_ref}


def overlap_metrics(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Dice = 2|A∩B| / (|A| + |B|) and IoU = |A∩B| / |A∪B| (NaN when both masks are empty) with the counts."""
    c = confusion(np.asarray(pred, bool), np.asarray(ref, bool), valid)
    denom = 2 * c["TP"] + c["FP"] + c["FN"]
    return {"Dice": 2 * c["TP"] / denom if denom else float("nan"),
            "IoU": c["TP"] / (c["TP"] + c["FP"] + c["FN"]) if denom else float("nan"), **c}


def dice(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    return float(overlap_metrics(pred, ref, valid)["Dice"])


def iou(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    return float(overlap_metrics(pred, ref, valid)["IoU"])


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile symmetric surface distance in mm (MONAI). NaN if either mask is empty (undefined)."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() or not ref.any():
        return float("nan")
    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
    y = torch.from_numpy(ref[None, None].astype(np.float32))
    kwargs = {"spacing": [float(s) for s in spacing]} if spacing is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, **kwargs)
    return float(d.reshape(-1)[0])


def compute_metrics(pred: np.ndarray, ref: np.ndarray, labels_or_regions: Iterable[LabelOrRegion],
                    ignore_label: int | None = None, spacing: Sequence[float] | None = None,
                    compute_hd95: bool = True) -> dict[str, dict]:
    """Per label/region: Dice, IoU, TP, FP, FN, TN, n_pred, n_ref (+ HD95, volumes in mm³ if spacing given)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    valid = (ref != ignore_label) if ignore_label is not None else None
    voxel = float(np.prod(spacing)) if spacing is not None else None
    out = {}
    for lr in labels_or_regions:
        p, r = region_mask(pred, lr), region_mask(ref, lr)
        m = overlap_metrics(p, r, valid)
        if compute_hd95:
            if valid is not None:
                p, r = p & valid, r & valid
            m["HD95"] = hd95(p, r, spacing)
        if voxel is not None:
            m["volume_pred"] = m["n_pred"] * voxel
            m["volume_ref"] = m["n_ref"] * voxel
        out[key_of(lr)] = m
    return out


def _read_label_map(path: str, reader_writer: str | None) -> tuple[np.ndarray, dict]:
    if reader_writer is None:
        from longnet.dataset.io import read_seg_file

        return read_seg_file(path, None)
    from longnet.dataset.reader_choice import reader_writer_by_name

    return reader_writer_by_name(reader_writer).read_seg(path)


def _evaluate_pair(args) -> dict:
    from longnet.evaluation.input_checks import check_geometry, check_label_values

    ref_file, pred_file, labels_or_regions, ignore_label, compute_hd95, extras, reader_writer, allowed = args
    ref, ref_props = _read_label_map(ref_file, reader_writer)
    check_label_values(ref, allowed, ref_file)
    pred, pred_props = _read_label_map(pred_file, reader_writer)
    check_label_values(pred, allowed, pred_file)
    check_geometry(ref.shape[1:], ref_props, pred.shape[1:], pred_props, pred_file)  # same shape is not enough
    spacing = ref_props["spacing"] if extras else None  # spacing adds volumes, beyond nnU-Net's schema
    metrics = compute_metrics(pred[0], ref[0], labels_or_regions, ignore_label, spacing, compute_hd95 and extras)
    return {"prediction_file": str(pred_file), "reference_file": str(ref_file), "metrics": metrics}


def _nan_stat(values: list[float], fn) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan")
    return float(fn(arr))


def aggregate(metric_per_case: list[dict], with_median: bool = True) -> dict:
    """`mean` (and `median`) per label over cases, NaN skipped, and `foreground_mean`: nnU-Net's plain mean
    over the labels' means, so a label whose mean is NaN makes it NaN."""
    keys: list[str] = []
    for c in metric_per_case:
        keys += [k for k in c["metrics"] if k not in keys]
    mean, median = {}, {}
    for k in keys:
        names: list[str] = []
        for c in metric_per_case:
            names += [n for n in c["metrics"].get(k, {}) if n not in names]
        vals = {n: [c["metrics"][k].get(n) for c in metric_per_case if k in c["metrics"]] for n in names}
        mean[k] = {n: _nan_stat(v, np.nanmean) for n, v in vals.items()}
        median[k] = {n: _nan_stat(v, np.nanmedian) for n, v in vals.items()}
    names = list(next(iter(mean.values())).keys()) if mean else []
    foreground_mean = {n: float(np.mean([mean[k].get(n, float("nan")) for k in mean])) for n in names}
    out = {"foreground_mean": foreground_mean, "mean": mean}
    if with_median:
        out["median"] = median
    return out


def evaluate_folders(gt_dir: str | Path, pred_dir: str | Path, labels_or_regions: Sequence[LabelOrRegion],
                     file_ending: str = ".nii.gz", ignore_label: int | None = None, num_processes: int = 1,
                     compute_hd95: bool = True, allow_missing: bool = False, nnunet_schema: bool = False,
                     reader_writer: str | None = None, allowed_values: Iterable[int] | None = None) -> dict:
    """Evaluate every reference in `gt_dir` against the same-named file in `pred_dir` (nnU-Net's rule: a
    missing prediction is an error unless `allow_missing`).

    `nnunet_schema` gives exactly nnU-Net's summary (the eight counts and ratios, no HD95, volumes or median);
    `reader_writer` names the reader class (nnU-Net's names) instead of reading any image through SimpleITK;
    `allowed_values` (dataset.json's label values) refuses any other value in a reference or prediction. A
    folder compared with itself, and a prediction on another grid than its reference, are refused."""
    from longnet.evaluation.input_checks import check_folders

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for d in (gt_dir, pred_dir):
        if not d.is_dir():
            raise LongnetError("folder not found", d)
    check_folders(gt_dir, pred_dir)
    allowed = sorted(set(int(v) for v in allowed_values)) if allowed_values is not None else None
    refs = sorted(p for p in gt_dir.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if not refs:
        raise LongnetError(f"no reference files ending in {file_ending}", gt_dir)
    missing = [p.name for p in refs if not (pred_dir / p.name).is_file()]
    if missing and not allow_missing:
        raise LongnetError(f"{len(missing)} reference case(s) have no prediction (e.g. {', '.join(missing[:3])}); "
                           "use --chill to evaluate only the predicted ones", pred_dir)
    pairs = [(r, pred_dir / r.name) for r in refs if (pred_dir / r.name).is_file()]
    if not pairs:
        raise LongnetError("no prediction matches a reference file", pred_dir)
    jobs = [(str(r), str(p), list(labels_or_regions), ignore_label, compute_hd95, not nnunet_schema, reader_writer,
             allowed) for r, p in pairs]
    per_case = map_processes(_evaluate_pair, jobs, num_processes)
    summary = {"metric_per_case": per_case}
    summary.update(aggregate(per_case, with_median=not nnunet_schema))
    return summary


def case_id_of(path: str | Path, file_ending: str) -> str:
    name = Path(path).name
    return name[: -len(file_ending)] if name.endswith(file_ending) else name
