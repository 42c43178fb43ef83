"""Longitudinal consistency: ASPC of structure volumes between consecutive visits, and STCS.

ASPC (absolute symmetric percent change) = 100·|V2 − V1| / (0.5·(V1 + V2)). A consistent method gives
values close to those of the ground truth; reporting both side by side shows whether a model exaggerates or
damps change.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from longnet.evaluation.segmentation import LabelOrRegion, dice, key_of, region_mask


def aspc(v1: float, v2: float) -> float:
    """Symmetric percent change between two volumes; NaN when both are zero (undefined)."""
    denom = 0.5 * (float(v1) + float(v2))
    return float("nan") if denom == 0 else 100.0 * abs(float(v2) - float(v1)) / denom


def structure_volumes(seg: np.ndarray, labels_or_regions: Iterable[LabelOrRegion],
                      spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Volume per label/region in mm³ (voxel counts when spacing is None)."""
    voxel = float(np.prod(spacing)) if spacing is not None else 1.0
    return {key_of(lr): float(np.count_nonzero(region_mask(seg, lr))) * voxel for lr in labels_or_regions}


def stcs(seg_t1: np.ndarray, seg_t2: np.ndarray, labels_or_regions: Iterable[LabelOrRegion]) -> dict[str, float]:
    """Spatio-temporal consistency: Dice between two time points' predictions that are already on one grid
    (after intra-subject registration)."""
    if seg_t1.shape != seg_t2.shape:
        raise ValueError(f"STCS needs aligned segmentations, got shapes {seg_t1.shape} and {seg_t2.shape}")
    return {key_of(lr): dice(region_mask(seg_t1, lr), region_mask(seg_t2, lr)) for lr in labels_or_regions}


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float("nan") if arr.size == 0 or np.all(np.isnan(arr)) else float(np.nanmean(arr))


def longitudinal_consistency(volumes_pred: Mapping[str, Mapping[str, float]],
                             volumes_ref: Mapping[str, Mapping[str, float]] | None,
                             subjects: Mapping[str, Sequence[str]]) -> dict:
    """ASPC between consecutive visits of every subject, for prediction and reference side by side.

    `volumes_*`: {case: {label_key: volume}}; `subjects`: {subject: [cases in time order]}. Visits without a
    volume (not evaluated) are skipped, so a pair is formed from consecutive *evaluated* visits.
    Returns {"per_subject": {subject: [pair, ...]}, "mean": {label: {...}}, "num_pairs": n}.
    """
    per_subject: dict[str, list] = {}
    collected: dict[str, dict[str, list[float]]] = {}
    for subject, cases in subjects.items():
        visits = [c for c in cases if c in volumes_pred]
        pairs = []
        for a, b in zip(visits[:-1], visits[1:]):
            metrics = {}
            for key in volumes_pred[a]:
                m = {"volume_pred_1": volumes_pred[a][key], "volume_pred_2": volumes_pred[b].get(key, 0.0),
                     "ASPC_pred": aspc(volumes_pred[a][key], volumes_pred[b].get(key, 0.0))}
                if volumes_ref is not None and a in volumes_ref and b in volumes_ref:
                    r1, r2 = volumes_ref[a].get(key, 0.0), volumes_ref[b].get(key, 0.0)
                    m.update({"volume_ref_1": r1, "volume_ref_2": r2, "ASPC_ref": aspc(r1, r2)})
                    m["ASPC_abs_difference"] = abs(m["ASPC_pred"] - m["ASPC_ref"])
                metrics[key] = m
                bucket = collected.setdefault(key, {})
                for name in ("ASPC_pred", "ASPC_ref", "ASPC_abs_difference"):
                    if name in m:
                        bucket.setdefault(name, []).append(m[name])
            pairs.append({"from": a, "to": b, "metrics": metrics})
        if pairs:
            per_subject[subject] = pairs
    mean = {k: {n: _nanmean(v) for n, v in d.items()} for k, d in collected.items()}
    return {"num_pairs": sum(len(p) for p in per_subject.values()), "mean": mean, "per_subject": per_subject}


def volumes_from_summary(metric_per_case: list[dict], file_ending: str) -> tuple[dict, dict]:
    """{case: {label: volume}} of predictions and references from a segmentation summary's per-case entries."""
    from pathlib import Path

    pred, ref = {}, {}
    for entry in metric_per_case:
        name = Path(entry["reference_file"]).name
        case = name[: -len(file_ending)] if name.endswith(file_ending) else name
        pred[case] = {k: m.get("volume_pred", m["n_pred"]) for k, m in entry["metrics"].items()}
        ref[case] = {k: m.get("volume_ref", m["n_ref"]) for k, m in entry["metrics"].items()}
    return pred, ref



class _StcsTable:
    """Collects per-pair STCS of prediction (and reference) and their means per label."""

    def __init__(self) -> None:
        self.per_subject: dict[str, list] = {}
        self.skipped: list[dict] = []
        self._values: dict[str, dict[str, list[float]]] = {}

    def add(self, subject: str, a: str, b: str, pred: Mapping, ref: Mapping | None,
            labels_or_regions: Sequence[LabelOrRegion]) -> None:
        entry = {"from": a, "to": b, "STCS_pred": stcs(np.asarray(pred[a]), np.asarray(pred[b]), labels_or_regions)}
        if ref is not None and a in ref and b in ref and np.shape(ref[a]) == np.shape(ref[b]):
            entry["STCS_ref"] = stcs(np.asarray(ref[a]), np.asarray(ref[b]), labels_or_regions)
        for name in ("STCS_pred", "STCS_ref"):
            for key, value in entry.get(name, {}).items():
                self._values.setdefault(key, {}).setdefault(name, []).append(value)
        self.per_subject.setdefault(subject, []).append(entry)

    def result(self) -> dict:
        mean = {k: {n: _nanmean(v) for n, v in d.items()} for k, d in self._values.items()}
        return {"num_pairs": sum(len(p) for p in self.per_subject.values()), "mean": mean,
                "per_subject": self.per_subject, "skipped": self.skipped}


def consecutive_stcs(segs_pred: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]],
                     labels_or_regions: Sequence[LabelOrRegion],
                     segs_ref: Mapping[str, np.ndarray] | None = None) -> dict:
    """STCS between consecutive visits of every subject whose segmentations share one grid.

    `segs_*`: {case: Z×Y×X label map}, each visit already resampled onto its subject's common (aligned)
    grid; visits missing from `segs_pred` are left out and pairs of different shapes are listed under
    `skipped` instead of failing the whole evaluation. With `segs_ref`, the reference's STCS (how much the
    true structures overlap between visits) is reported next to the prediction's.
    Returns {"per_subject": {subject: [{"from", "to", "STCS_pred": {label: Dice}, "STCS_ref": {...}}]},
    "mean": {label: {"STCS_pred", "STCS_ref"}}, "num_pairs": n, "skipped": [{"from", "to", "reason"}]}.
    """
    table = _StcsTable()
    for subject, cases in subjects.items():
        visits = [c for c in cases if c in segs_pred]
        for a, b in zip(visits[:-1], visits[1:]):
            sa, sb = np.shape(segs_pred[a]), np.shape(segs_pred[b])
            if sa != sb:
                table.skipped.append({"from": a, "to": b, "reason": f"not on one grid ({sa} vs {sb})"})
                continue
            table.add(subject, a, b, segs_pred, segs_ref, labels_or_regions)
    return table.result()


def stcs_from_folders(pred_dir, subjects: Mapping[str, Sequence[str]], labels_or_regions: Sequence[LabelOrRegion],
                      file_ending: str, gt_dir=None) -> dict:
    """`consecutive_stcs` on segmentation files `CASE<file_ending>`: a pair counts only when both files lie on
    the same grid (size, spacing, origin, direction), i.e. after intra-subject alignment; other pairs are
    listed under `skipped` with the difference. Files are read one subject at a time (bounded memory)."""
    from pathlib import Path

    from longnet.dataset.io import geometry_mismatch, read_seg_file

    def read(folder, case):
        path = Path(folder) / f"{case}{file_ending}"
        return read_seg_file(path) if path.is_file() else None

    table = _StcsTable()
    for subject, cases in subjects.items():
        pred, ref, grid = {}, {}, {}
        for c in cases:
            p = read(pred_dir, c)
            if p is None:
                continue
            pred[c], grid[c] = p[0][0], (p[0].shape, p[1]["sitk_stuff"])
            r = read(gt_dir, c) if gt_dir is not None else None
            if r is not None and r[0].shape == p[0].shape:
                ref[c] = r[0][0]
        visits = [c for c in cases if c in pred]
        for a, b in zip(visits[:-1], visits[1:]):
            problem = geometry_mismatch(grid[a][0], grid[a][1], grid[b][0], grid[b][1])
            if problem:
                table.skipped.append({"from": a, "to": b, "reason": f"not on one grid ({problem})"})
            else:
                table.add(subject, a, b, pred, ref, labels_or_regions)
    return table.result()
