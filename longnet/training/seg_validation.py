"""Full-image validation at the end of segmentation training → `fold_N/validation/summary.json`.

Every validation case is predicted with `longnet.inference.predictor.Predictor` (sliding window, Gaussian,
mirroring). When the preprocessed dataset has `gt_segmentations/`, predictions are also exported in the
original geometry. Metrics are computed per label/region on the preprocessed grid (nnU-Net's summary schema);
`evaluate_exported` is the single place to switch to `longnet.evaluation` on the exported files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from longnet.data.cases import CaseReader
from longnet.utils.files import save_json


def _label_metrics(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    if mask is not None:
        pred, ref = pred & mask, ref & mask
    tp = int(np.sum(pred & ref))
    fp = int(np.sum(pred & ~ref))
    fn = int(np.sum(~pred & ref))
    total = int(mask.sum()) if mask is not None else pred.size
    tn = total - tp - fp - fn
    denom = 2 * tp + fp + fn
    return {"Dice": (2 * tp / denom) if denom > 0 else float("nan"),
            "IoU": (tp / (tp + fp + fn)) if (tp + fp + fn) > 0 else float("nan"),
            "FN": fn, "FP": fp, "TN": tn, "TP": tp, "n_pred": tp + fp, "n_ref": tp + fn}


def case_metrics(logits: torch.Tensor, seg: np.ndarray, label_manager) -> dict[str, dict]:
    """Metrics of one case on the preprocessed grid (seg -1 counts as background)."""
    ref_lab = np.where(seg[0] < 0, 0, seg[0])
    mask = None
    if label_manager.ignore_label is not None:
        mask = ref_lab != label_manager.ignore_label
    out: dict[str, dict] = {}
    if label_manager.has_regions:
        probs = torch.sigmoid(logits.float()).numpy() > 0.5
        for i, region in enumerate(label_manager.foreground_regions):
            labels = list(region) if isinstance(region, (list, tuple)) else [region]
            out[str(tuple(labels)) if len(labels) > 1 else str(labels[0])] = _label_metrics(
                probs[i], np.isin(ref_lab, labels), mask)
    else:
        pred = logits.argmax(0).numpy()
        for lab in label_manager.foreground_labels:
            out[str(lab)] = _label_metrics(pred == lab, ref_lab == lab, mask)
    return out


def summarize(per_case: list[dict]) -> dict[str, Any]:
    """nnU-Net's summary.json layout: foreground_mean, mean (per label), metric_per_case."""
    keys = list(per_case[0]["metrics"]) if per_case else []
    mean = {}
    for k in keys:
        mean[k] = {m: float(np.nanmean([c["metrics"][k][m] for c in per_case]))
                   for m in per_case[0]["metrics"][k]}
    fg = {m: float(np.nanmean([mean[k][m] for k in keys])) for m in (mean[keys[0]] if keys else {})}
    return {"foreground_mean": fg, "mean": mean, "metric_per_case": per_case}


def evaluate_exported(trainer, val_dir: Path, exported: list[Path]) -> dict | None:
    """Hook for evaluation of exported files in the original geometry (None: use the preprocessed-grid metrics)."""
    return None


def run_final_validation(trainer) -> Path:
    """Predict the trainer's labelled validation cases and write validation/summary.json (rank 0 only)."""
    from longnet.inference.predictor import Predictor

    val_dir = trainer.output_folder / "validation"
    val_dir.mkdir(parents=True, exist_ok=True)
    cases = trainer._labelled_cases(trainer.val_cases)
    predictor = Predictor.from_trainer(trainer, use_mirroring=not trainer.options.get("no_validation_mirroring"))
    reader = CaseReader(trainer.data_folder)
    gt_dir = trainer.preprocessed_dataset_folder / "gt_segmentations"
    ending = trainer.dataset_json.get("file_ending", ".nii.gz")
    lm = trainer.label_manager
    per_case, exported = [], []
    for case in cases:
        data, seg, props = reader.load(case)
        logits = predictor.predict_preprocessed(data)
        if gt_dir.is_dir() and "sitk_stuff" in props:
            from longnet.inference.export import export_prediction

            dest = val_dir / f"{case}{ending}"
            export_prediction(logits, props, trainer.plans, trainer.configuration_manager, lm, dest)
            exported.append(dest)
        per_case.append({"reference_file": str(gt_dir / f"{case}{ending}") if gt_dir.is_dir() else case,
                         "prediction_file": str(val_dir / f"{case}{ending}") if exported else None,
                         "metrics": case_metrics(logits, seg, lm)})
        trainer.print(f"validation {case}: " + ", ".join(
            f"{k} Dice {v['Dice']:.4f}" for k, v in per_case[-1]["metrics"].items()))
    summary = evaluate_exported(trainer, val_dir, exported)
    if summary is None:
        summary = summarize(per_case)
        summary["note"] = "metrics computed on the preprocessed grid of the validation cases"
        save_json(summary, val_dir / "summary.json", sort_keys=False)
    trainer.print(f"final validation on {len(cases)} case(s): mean foreground Dice "
                  f"{summary['foreground_mean'].get('Dice', float('nan')):.4f}")
    return val_dir / "summary.json"
