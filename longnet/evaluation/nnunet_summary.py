"""summary.json in exactly nnU-Net's schema for the model-selection steps (cross-validation, ensembles,
postprocessing): the dataset's labels or regions, nnU-Net's chill rule, sorted keys, NaN written as NaN."""
from __future__ import annotations

import math
from pathlib import Path

from longnet.dataset.labels import LabelManager
from longnet.errors import LongnetError
from longnet.evaluation.segmentation import LabelOrRegion, evaluate_folders
from longnet.utils.files import load_json, save_json


def targets_of(label_manager: LabelManager) -> list[LabelOrRegion]:
    """What nnU-Net evaluates: the foreground regions of a region dataset, else the foreground labels."""
    return list(label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels)


def write_summary(summary: dict, dest: str | Path) -> None:
    """nnU-Net writes summary.json with indent 4 and sorted keys."""
    save_json(summary, dest, sort_keys=True)


def evaluate_to_summary(gt_dir: str | Path, pred_dir: str | Path, dataset_json: dict, output_file: str | Path,
                        num_processes: int = 1, chill: bool = True, reader_writer: str | None = None) -> dict:
    """Evaluate the label maps of `pred_dir` against `gt_dir` with the dataset's labels and write `output_file`.

    `chill` (nnU-Net's default inside the pipeline): only predicted cases are evaluated; `reader_writer` names
    the reader class (default: any image SimpleITK reads)."""
    from longnet.evaluation.input_checks import check_output

    lm = LabelManager.from_dataset_json(dataset_json)
    check_output(output_file, gt_dir)
    summary = evaluate_folders(gt_dir, pred_dir, targets_of(lm), dataset_json.get("file_ending", ".nii.gz"),
                               lm.ignore_label, num_processes, compute_hd95=False, allow_missing=chill,
                               nnunet_schema=True, reader_writer=reader_writer, allowed_values=lm.valid_values)
    write_summary(summary, output_file)
    return summary


def load_summary(path: str | Path) -> dict:
    """A summary.json with `foreground_mean` and `mean` (else a LongnetError naming the file)."""
    summary = load_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("foreground_mean"), dict) \
            or not isinstance(summary.get("mean"), dict):
        raise LongnetError("not a segmentation summary (needs 'foreground_mean' and 'mean')", path)
    return summary


def foreground_dice(summary: dict) -> float:
    """`foreground_mean.Dice`, the score nnU-Net ranks models by (NaN if absent)."""
    value = summary.get("foreground_mean", {}).get("Dice")
    return float(value) if isinstance(value, (int, float)) else math.nan


def key_dice(summary: dict, key: str) -> float:
    """Mean Dice of one label/region key ('1', '(1, 2)'); NaN if absent."""
    value = summary.get("mean", {}).get(key, {}).get("Dice")
    return float(value) if isinstance(value, (int, float)) else math.nan
