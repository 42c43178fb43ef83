"""What evaluation must refuse instead of scoring: a score is only meaningful when prediction and reference are
different files on the same grid holding declared labels.

A folder compared with itself scores Dice 1.0; a prediction on another spacing, origin or direction lines up voxel
by voxel yet means other places in the body; a label value dataset.json does not declare is a mistake in one of
the files (or the wrong dataset.json). And the summary is never written into the reference folder, which must stay
as the user gave it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from longnet.dataset.readers import props_mismatch
from longnet.errors import DatasetError, LongnetError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_folders(gt_dir: str | Path, pred_dir: str | Path) -> None:
    """Refuse comparing a folder with itself (also through a symlink or a different spelling of the path)."""
    gt, pred = Path(gt_dir).resolve(), Path(pred_dir).resolve()
    if gt == pred:
        raise LongnetError("the prediction folder is the reference folder: every score would be perfect; give the "
                           f"folder with the predictions (reference: {gt_dir})", pred_dir)


def check_output(output: str | Path, gt_dir: str | Path) -> None:
    """Refuse a summary path inside the reference folder (`-o`, or the default PRED/summary.json when the
    predictions sit inside it): the references are left exactly as given."""
    out, gt = Path(output).resolve(), Path(gt_dir).resolve()
    if gt.is_dir() and _inside(out, gt):
        raise LongnetError(f"refusing to write the summary into the reference folder {gt_dir}: give -o with a path "
                           "outside it", output)


def check_geometry(ref_shape, ref_props: dict, pred_shape, pred_props: dict, pred_file: str | Path) -> None:
    """Refuse a prediction whose grid (size, spacing, origin, direction) differs from its reference's."""
    problem = props_mismatch(ref_shape, ref_props, pred_shape, pred_props)
    if problem:
        raise DatasetError(f"prediction geometry differs from its reference: {problem}", pred_file)


def check_label_values(seg: np.ndarray, allowed: Iterable[int] | None, path: str | Path) -> None:
    """Refuse label values outside `allowed` (dataset.json's labels, ignore label included); None: no check."""
    if allowed is None:
        return
    allowed = sorted(set(int(v) for v in allowed))
    bad = sorted(set(np.unique(seg).tolist()) - set(allowed))
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise DatasetError(f"label values [{shown}] are not declared in dataset.json 'labels' (allowed: "
                           f"{allowed})", path)
