"""Longitudinal consistency of each model-selection candidate, reported next to its Dice.

For datasets with `patientsTr.json`, the ASPC of structure volumes between consecutive visits of a subject is
computed for the candidate's cross-validation predictions and for the references (from the counts in its
summary.json, scaled to mm³ by each reference's voxel size). A candidate whose ASPC is close to the
references' follows the true change; one far from it exaggerates or damps change.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from longnet.errors import DatasetError
from longnet.evaluation.longitudinal import longitudinal_consistency
from longnet.utils.files import load_json

STATS = ("ASPC_pred", "ASPC_ref", "ASPC_abs_difference")


def load_subjects(path: str | Path) -> dict[str, list[str]] | None:
    """{subject: [cases in time order]} from a patientsTr.json; None if the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    data = load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(c, str) for c in v)
                                             for v in data.values()):
        raise DatasetError("must map subject -> [case, case, ...]", path)
    return {str(k): list(v) for k, v in data.items()}


def _voxel_volume(path: str, cache: dict[str, float]) -> float:
    """mm³ of one voxel from the image header (1.0 where the format carries no spacing)."""
    name = Path(path).name
    if name not in cache:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
            cache[name] = float(np.prod(reader.GetSpacing()))
        except RuntimeError:
            cache[name] = 1.0
    return cache[name]


def candidate_consistency(summary: dict, subjects: dict[str, list[str]], file_ending: str,
                          voxel_cache: dict[str, float] | None = None) -> dict:
    """{"num_pairs", "mean": {label: {ASPC_pred, ASPC_ref, ASPC_abs_difference}}, "foreground_mean": {...}}."""
    cache = voxel_cache if voxel_cache is not None else {}
    pred, ref = {}, {}
    for entry in summary.get("metric_per_case", []):
        name = Path(entry["reference_file"]).name
        case = name[: -len(file_ending)] if name.endswith(file_ending) else name
        voxel = _voxel_volume(entry["reference_file"], cache)
        pred[case] = {k: m["n_pred"] * voxel for k, m in entry["metrics"].items()}
        ref[case] = {k: m["n_ref"] * voxel for k, m in entry["metrics"].items()}
    result = longitudinal_consistency(pred, ref, subjects)
    fg = {}
    for stat in STATS:
        values = [m[stat] for m in result["mean"].values() if stat in m and not math.isnan(m[stat])]
        fg[stat] = float(np.mean(values)) if values else float("nan")
    return {"num_pairs": result["num_pairs"], "mean": result["mean"], "foreground_mean": fg}


def consistency_text(entry: dict) -> str:
    """One line's worth: the candidate's ASPC against the references' and their mean absolute difference."""
    fg = entry["foreground_mean"]
    if entry["num_pairs"] == 0:
        return "no consecutive visit pairs"
    return (f"ASPC pred {fg['ASPC_pred']:.2f}% vs ref {fg['ASPC_ref']:.2f}%, mean |difference| "
            f"{fg['ASPC_abs_difference']:.2f}% over {entry['num_pairs']} visit pair(s)")
