"""Lesion-level and surface metrics of longitudinal segmentations: per visit, per patient and overall.

Per visit (prediction vs reference, one lesion mask = one label, or the union of a region / all foreground):
Dice, volume error (predicted − reference, mm³; absolute and relative), normalised surface Dice at a tolerance
(MONAI `compute_surface_dice`), ASSD and HD95 (MONAI), and lesion-wise detection. Lesions are connected
components (full connectivity: 26 neighbours in 3D). Matching needs real overlap, with the two thresholds of the
MSSEG lesion-detection evaluation (Commowick et al., Sci. Rep. 2018), so that a prediction covering the whole
volume detects nothing:
- a predicted component is correct (TP) when at most GAMMA = 65 % of its voxels lie outside reference lesions,
  otherwise it is a false positive (FP);
- a reference lesion is detected when correct predicted components cover at least ALPHA = 10 % of its voxels,
  otherwise it is a false negative (FN).
The two sides are counted separately: TP + FP = predicted components, detected_ref + FN = reference lesions.
Precision = TP / predicted components, recall = detected_ref / reference lesions, F1 their harmonic mean; patients
and the whole set pool the counts before dividing.

Between consecutive visits of a subject: a reference lesion of visit t+1 that overlaps no reference lesion of
visit t is NEW; it is detected when correct predicted components of visit t+1 cover ALPHA of it (new-lesion
recall). A predicted component of visit t+1 that overlaps no predicted component of visit t is a predicted new
lesion, correct when at most GAMMA of it lies outside new reference lesions (new-lesion precision). Visits are
compared in physical space, without registration: visit t is resampled onto visit t+1's grid (nearest neighbour,
identity transform), which is exact for visits on one grid or aligned by the scanner's geometry and approximate
when the head moved between scans (a lesion that moved by more than its size reads as new).
Also reported: ASPC of the lesion volume between consecutive visits, predicted vs reference.

Undefined values are NaN (skipped by the means): surface metrics when both masks are empty (NSD is 0 and
ASSD/HD95 NaN when only one is), Dice when both are empty, F1 without any lesion on either side.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from longnet.errors import LongnetError

DEFAULT_TOLERANCE_MM = 1.0


# ---------------------------------------------------------------------------- which label is "lesion"
def resolve_lesion_target(dataset_json: dict, lesion_label: int | None = None) -> tuple[str, tuple[int, ...]]:
    """(name, label values whose union is the lesion mask): `lesion_label`, else the label named like
    'lesion' in dataset.json, else every foreground label."""
    labels = dataset_json.get("labels") or {}
    values = {str(k): tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v])) for k, v in labels.items()}
    if lesion_label is not None:
        for name, vals in values.items():
            if vals == (int(lesion_label),):
                return name, vals
        if int(lesion_label) not in {x for v in values.values() for x in v} or int(lesion_label) == 0:
            raise LongnetError(f"--lesion-label {lesion_label} is not a foreground label of dataset.json "
                               f"({', '.join(f'{k}={list(v)}' for k, v in values.items())})")
        return f"label {lesion_label}", (int(lesion_label),)
    for name, vals in values.items():
        if "lesion" in name.lower() and vals != (0,):
            return name, vals
    fg = tuple(sorted({x for name, v in values.items() for x in v if x != 0 and name != "ignore"}))
    if not fg:
        raise LongnetError("dataset.json has no foreground label to evaluate lesions on")
    return "foreground", fg


def lesion_mask(seg: np.ndarray, values: Sequence[int]) -> np.ndarray:
    return np.isin(np.asarray(seg), np.asarray(list(values)))


# ---------------------------------------------------------------------------- detection
def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (labels 1..n)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    labelled, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    return labelled, int(n)


ALPHA = 0.10   # least fraction of a reference lesion that correct predictions must cover to detect it
GAMMA = 0.65   # largest fraction of a predicted component that may lie outside reference lesions


def _overlapping(labelled: np.ndarray, other: np.ndarray) -> set[int]:
    """Component ids of `labelled` that share at least one voxel with the boolean mask `other`."""
    ids = np.unique(labelled[np.asarray(other, bool)])
    return {int(i) for i in ids if i != 0}


def _correct_components(labelled: np.ndarray, n: int, target: np.ndarray) -> set[int]:
    """Components of `labelled` with at most GAMMA of their voxels outside the boolean mask `target`."""
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    inside = np.bincount(labelled[np.asarray(target, bool)], minlength=n + 1)
    return {i for i in range(1, n + 1) if inside[i] > 0 and inside[i] >= (1.0 - GAMMA) * sizes[i]}


def _covered(labelled: np.ndarray, n: int, by: np.ndarray) -> set[int]:
    """Components of `labelled` of which the boolean mask `by` covers at least ALPHA of the voxels."""
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    hit = np.bincount(labelled[np.asarray(by, bool)], minlength=n + 1)
    return {i for i in range(1, n + 1) if hit[i] > 0 and hit[i] >= ALPHA * sizes[i]}


def detection_counts(pred: np.ndarray, ref: np.ndarray) -> dict[str, int]:
    """Lesion-wise counts of two boolean masks on one grid (see the module docstring for the rules)."""
    pl, n_pred = components(pred)
    rl, n_ref = components(ref)
    correct = _correct_components(pl, n_pred, ref)
    detected = len(_covered(rl, n_ref, np.isin(pl, list(correct)))) if correct else 0
    return {"n_pred": n_pred, "n_ref": n_ref, "TP": len(correct), "FP": n_pred - len(correct),
            "detected_ref": detected, "FN": n_ref - detected}


def detection_scores(counts: Mapping[str, float]) -> dict[str, float]:
    """Precision, recall and F1 from (pooled) detection counts; NaN where undefined."""
    n_pred, n_ref = counts.get("n_pred", 0), counts.get("n_ref", 0)
    precision = counts["TP"] / n_pred if n_pred else float("nan")
    recall = counts["detected_ref"] / n_ref if n_ref else float("nan")
    if n_pred == 0 and n_ref == 0:
        f1 = float("nan")
    elif n_pred == 0 or n_ref == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "F1": float(f1)}


def new_lesion_counts(ref_prev: np.ndarray, ref_cur: np.ndarray, pred_prev: np.ndarray,
                      pred_cur: np.ndarray) -> dict[str, int]:
    """New reference lesions of the current visit (no overlap with the previous visit's reference) and how
    many the prediction detects; predicted new lesions and how many of them are correct."""
    rl, n_ref = components(ref_cur)
    new_ids = set(range(1, n_ref + 1)) - _overlapping(rl, ref_prev)
    new_mask = np.isin(rl, list(new_ids)) if new_ids else np.zeros(rl.shape, bool)
    pl, n_pred = components(pred_cur)
    correct = _correct_components(pl, n_pred, ref_cur)
    found = _covered(rl, n_ref, np.isin(pl, list(correct))) if correct else set()
    pred_new = set(range(1, n_pred + 1)) - _overlapping(pl, pred_prev)
    correct_new = pred_new & _correct_components(pl, n_pred, new_mask)
    return {"n_new_ref": len(new_ids), "new_detected": len(new_ids & found), "n_new_pred": len(pred_new),
            "new_pred_correct": len(correct_new)}


def new_lesion_scores(counts: Mapping[str, float]) -> dict[str, float]:
    n_ref, n_pred = counts.get("n_new_ref", 0), counts.get("n_new_pred", 0)
    recall = counts["new_detected"] / n_ref if n_ref else float("nan")
    precision = counts["new_pred_correct"] / n_pred if n_pred else float("nan")
    f1 = (2 * precision * recall / (precision + recall) if n_ref and n_pred and precision + recall > 0
          else (0.0 if n_ref or n_pred else float("nan")))
    return {"new_lesion_recall": float(recall), "new_lesion_precision": float(precision),
            "new_lesion_F1": float(f1)}


# ---------------------------------------------------------------------------- surfaces and volumes
def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None,
                    tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict[str, float]:
    """Normalised surface Dice at `tolerance_mm`, ASSD and HD95 (mm, MONAI)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_surface_dice

    from longnet.evaluation.segmentation import hd95

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() and not ref.any():
        return {"NSD": float("nan"), "ASSD": float("nan"), "HD95": float("nan")}
    if not pred.any() or not ref.any():
        return {"NSD": 0.0, "ASSD": float("nan"), "HD95": float("nan")}
    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
    y = torch.from_numpy(ref[None, None].astype(np.float32))
    sp = [float(s) for s in spacing] if spacing is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nsd = compute_surface_dice(y_pred, y, [float(tolerance_mm)], include_background=True, spacing=sp)
        assd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=sp)
    return {"NSD": float(nsd.reshape(-1)[0]), "ASSD": float(assd.reshape(-1)[0]), "HD95": hd95(pred, ref, spacing)}


def visit_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None,
                  tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict[str, float]:
    """Every per-visit metric of two boolean lesion masks on one grid."""
    from longnet.evaluation.segmentation import dice

    voxel = float(np.prod(spacing)) if spacing is not None else 1.0
    vp, vr = float(np.count_nonzero(pred)) * voxel, float(np.count_nonzero(ref)) * voxel
    counts = detection_counts(pred, ref)
    out = {"Dice": dice(pred, ref), "volume_pred": vp, "volume_ref": vr, "volume_error": vp - vr,
           "abs_volume_error": abs(vp - vr), "relative_volume_error": abs(vp - vr) / vr if vr else float("nan")}
    out.update(surface_metrics(pred, ref, spacing, tolerance_mm))
    out.update(counts)
    out.update(detection_scores(counts))
    return out


# ---------------------------------------------------------------------------- folders
DEFINITIONS = {
    "lesions": "connected components of the lesion mask (full connectivity: 26 neighbours in 3D)",
    "detection": f"TP = predicted component with at most {GAMMA:.0%} of its voxels outside reference lesions, "
                 f"FP = the other predicted components; a reference lesion is detected (detected_ref) when TP "
                 f"components cover at least {ALPHA:.0%} of it, else it is a FN; precision = TP / n_pred, "
                 "recall = detected_ref / n_ref",
    "new_lesions": "a reference lesion of visit t+1 that overlaps no reference lesion of visit t (compared in "
                   "physical space, no registration); new_detected / new_pred_correct follow the detection rules",
    "volumes": "mm³; volume_error = predicted − reference (signed), abs_volume_error and relative_volume_error "
               "(= |error| / reference) unsigned; ASPC = symmetric percent change between consecutive visits",
    "aggregation": "per_patient and overall pool the lesion counts before computing precision, recall and F1; "
                   "Dice, NSD, ASSD, HD95 and the volume errors are means over visits, ASPC terms means over "
                   "consecutive visit pairs, each skipping undefined (NaN) values",
    "undefined": "NaN: precision without predicted lesions, recall without reference lesions, F1 without "
                 "either, new-lesion scores without new lesions (on either side), Dice and surface metrics "
                 "when both masks are empty (NSD 0 and ASSD/HD95 NaN when one is), ASPC when both volumes are 0 "
                 "(a model that finds no lesion at two visits has no ASPC: see F1 and recall for such failures)",
}
_COUNT_KEYS = ("n_pred", "n_ref", "TP", "FP", "detected_ref", "FN")
_NEW_KEYS = ("n_new_ref", "new_detected", "n_new_pred", "new_pred_correct")
_MEAN_KEYS = ("Dice", "NSD", "ASSD", "HD95", "volume_error", "abs_volume_error", "relative_volume_error")


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float("nan") if arr.size == 0 or np.all(np.isnan(arr)) else float(np.nanmean(arr))


def _on_grid_of(arr: np.ndarray, props: dict, ref_shape: tuple, ref_props: dict) -> np.ndarray:
    """`arr` (a boolean mask with geometry `props`) resampled onto the grid of `ref_props` (physical space)."""
    import SimpleITK as sitk

    from longnet.dataset.io import geometry_mismatch

    if geometry_mismatch(ref_shape, ref_props["sitk_stuff"], arr.shape, props["sitk_stuff"]) is None:
        return arr

    def image(a, p):
        img = sitk.GetImageFromArray(np.asarray(a, np.uint8))
        g = p["sitk_stuff"]
        img.SetSpacing([float(v) for v in g["spacing"]])
        img.SetOrigin([float(v) for v in g["origin"]])
        img.SetDirection([float(v) for v in g["direction"]])
        return img

    out = sitk.Resample(image(arr, props), image(np.zeros(ref_shape, np.uint8), ref_props), sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out).astype(bool)


def _pooled(rows: list[dict], keys: Sequence[str]) -> dict[str, int]:
    return {k: int(sum(r[k] for r in rows)) for k in keys}


def _block(visits: list[dict], pairs: list[dict]) -> dict:
    """Means over visits, pooled detection counts and scores, pooled new-lesion counts, mean ASPC terms."""
    out: dict = {"num_visits": len(visits), "num_pairs": len(pairs)}
    out.update({k: _nanmean([v[k] for v in visits]) for k in _MEAN_KEYS})
    counts = _pooled(visits, _COUNT_KEYS)
    out.update(counts)
    out.update(detection_scores(counts))
    new = _pooled(pairs, _NEW_KEYS)
    out.update(new)
    out.update(new_lesion_scores(new))
    for k in ("ASPC_pred", "ASPC_ref", "ASPC_abs_difference"):
        out[k] = _nanmean([p[k] for p in pairs])
    return out


def lesion_summary(gt_dir: str | Path, pred_dir: str | Path, subjects: Mapping[str, Sequence[str]],
                   values: Sequence[int], file_ending: str, name: str = "lesion",
                   tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> dict:
    """Lesion metrics of every visit that has both a prediction and a reference, per patient and overall.

    Returns {"label", "label_values", "tolerance_mm", "definitions", "per_visit": {case: {...}},
    "per_patient": {subject: {..., "pairs": [...]}}, "overall": {...}}."""
    from longnet.dataset.io import read_seg_file
    from longnet.evaluation.longitudinal import aspc

    if not tolerance_mm > 0:
        raise LongnetError(f"the surface Dice tolerance must be > 0 mm, got {tolerance_mm}")
    per_visit: dict[str, dict] = {}
    per_patient: dict[str, dict] = {}
    all_pairs: list[dict] = []
    for subject, cases in subjects.items():
        loaded = []
        for case in cases:
            p, r = Path(pred_dir) / f"{case}{file_ending}", Path(gt_dir) / f"{case}{file_ending}"
            if not (p.is_file() and r.is_file()):
                continue
            ref, ref_props = read_seg_file(r, None)
            pred, _ = read_seg_file(p, None)
            if ref.shape != pred.shape:
                raise LongnetError(f"prediction of {case} has shape {pred.shape[1:]}, reference {ref.shape[1:]}", p)
            rm, pm = lesion_mask(ref[0], values), lesion_mask(pred[0], values)
            per_visit[case] = {"subject": subject, **visit_metrics(pm, rm, ref_props.get("spacing"), tolerance_mm)}
            loaded.append((case, pm, rm, ref_props))
        pairs = []
        for (a, pa, ra, props_a), (b, pb, rb, props_b) in zip(loaded[:-1], loaded[1:]):
            pa_b, ra_b = (_on_grid_of(m, props_a, rb.shape, props_b) for m in (pa, ra))
            va, vb = per_visit[a], per_visit[b]
            pair = {"from": a, "to": b, **new_lesion_counts(ra_b, rb, pa_b, pb),
                    "ASPC_pred": aspc(va["volume_pred"], vb["volume_pred"]),
                    "ASPC_ref": aspc(va["volume_ref"], vb["volume_ref"])}
            pair["ASPC_abs_difference"] = abs(pair["ASPC_pred"] - pair["ASPC_ref"])
            pairs.append(pair)
        if loaded:
            per_patient[subject] = {**_block([per_visit[c] for c, *_ in loaded], pairs), "pairs": pairs}
            all_pairs += pairs
    if not per_visit:
        raise LongnetError("no visit of the patients file has both a prediction and a reference", pred_dir)
    return {"label": name, "label_values": list(values), "tolerance_mm": float(tolerance_mm),
            "definitions": DEFINITIONS,
            "per_visit": per_visit, "per_patient": per_patient,
            "overall": _block(list(per_visit.values()), all_pairs)}
