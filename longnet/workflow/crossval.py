"""Merge the fold validations of a trained model into one folder and score it (nnU-Net's accumulate_cv_results).

`RES/<D>/<TPC>/crossval_results_folds_<folds joined by _>/` gets the model's dataset.json and plans.json, every
fold's `validation/*<file_ending>`, and summary.json against `RAW/<D>/labelsTr` (else
`PRE/<D>/gt_segmentations`). The folder is assembled under a hidden name and renamed into place, so an error
leaves nothing half-merged.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from longnet.utils.files import staging_dir
from longnet.dataset.folder_setup import folder_setup
from longnet.errors import LongnetError
from longnet.evaluation.nnunet_summary import evaluate_to_summary, load_summary, write_summary
from longnet.paths import preprocessed_root, raw_root
from longnet.postprocessing.apply import label_maps


def folds_name(folds: Sequence[int | str]) -> str:
    return "_".join(str(f) for f in folds)


def crossval_folder(model_folder: str | Path, folds: Sequence[int | str]) -> Path:
    return Path(model_folder) / f"crossval_results_folds_{folds_name(folds)}"


def reference_folder(dataset_name: str, prefer_raw: bool = True) -> Path:
    """`RAW/<D>/labelsTr` if present (and `prefer_raw`), else `PRE/<D>/gt_segmentations` (must exist)."""
    if prefer_raw:
        try:
            labels = raw_root() / dataset_name / "labelsTr"
        except LongnetError:
            labels = None
        if labels is not None and labels.is_dir():
            return labels
    gt = preprocessed_root() / dataset_name / "gt_segmentations"
    if not gt.is_dir():
        raise LongnetError("reference segmentations not found (run longnet_preprocess, which writes them)", gt)
    return gt


def _collect(model_folder: Path, folds: Sequence[int | str], ending: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for fold in folds:
        val = model_folder / f"fold_{fold}" / "validation"
        if not val.is_dir():
            raise LongnetError(f"fold {fold} has no validation folder: train (or validate with --val) every "
                               "requested fold first", val)
        for name in label_maps(val, ending):
            if name in files:
                raise LongnetError(f"case {name} is predicted by two folds ({files[name].parent.parent.name} and "
                                   f"fold_{fold}): the folds' validation sets must not overlap", val / name)
            files[name] = val / name
    if not files:
        raise LongnetError(f"no validation predictions ending in {ending} in folds {list(folds)}", model_folder)
    return files


def accumulate_cv_results(model_folder: str | Path, merged_folder: str | Path, folds: Sequence[int | str],
                          num_processes: int = 1, overwrite: bool = True, dataset_name: str | None = None) -> dict:
    """Merge and evaluate; returns the summary. `overwrite=False` reuses an existing merged folder whose
    summary.json is present and whose label maps are exactly the folds' predictions."""
    model_folder, merged_folder = Path(model_folder), Path(merged_folder)
    setup = folder_setup(model_folder, plans_required=True)
    ending = setup.file_ending
    files = _collect(model_folder, folds, ending)
    if not overwrite and (merged_folder / "summary.json").is_file() and merged_folder.is_dir() \
            and set(label_maps(merged_folder, ending)) == set(files):
        return load_summary(merged_folder / "summary.json")
    name = dataset_name or str(setup.plans.get("dataset_name") or model_folder.parent.name)
    ref = reference_folder(name)
    merged_folder.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(merged_folder.parent, f".{merged_folder.name}.tmp-")
    try:
        for n in ("dataset.json", "plans.json"):
            shutil.copy2(model_folder / n, staging / n)
        for n, src in sorted(files.items()):
            shutil.copy2(src, staging / n)
        summary = evaluate_to_summary(ref, staging, setup.dataset_json, staging / "summary.json", num_processes,
                                      chill=True, reader_writer=setup.reader_writer.name)
        summary = _with_final_paths(summary, staging, merged_folder)
        write_summary(summary, staging / "summary.json")
        if merged_folder.exists():
            shutil.rmtree(merged_folder)
        staging.rename(merged_folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _with_final_paths(summary: dict, staging: Path, final: Path) -> dict:
    """Per-case `prediction_file`s name the merged folder, not the staging folder they were evaluated in."""
    for entry in summary.get("metric_per_case", []):
        entry["prediction_file"] = str(final / Path(entry["prediction_file"]).name)
    return summary
