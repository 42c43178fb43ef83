"""Classification metrics for progression probes (STAMP, LEARNER): accuracy, macro-F1, AUROC, PR-AUC and
balanced accuracy (mean per-class recall). Metrics undefined for the given labels (e.g. AUROC with one class
present) are NaN rather than an exception, so one degenerate fold does not abort an evaluation.

`macro_F1` averages over the classes that occur (in the targets or the predictions): a class a test split never
contains has no F1, and counting it as 0 (`macro_F1_all_classes`) would make a perfect classifier score below 1.
Which classes occur is reported next to it (`classes_in_targets`, `classes_in_predictions`)."""
from __future__ import annotations

import warnings

import numpy as np


def _probabilities(y_prob: np.ndarray) -> np.ndarray:
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim == 1:  # binary: probability of the positive class
        return np.stack([1.0 - y_prob, y_prob], axis=1)
    return y_prob


def predicted_labels(y_prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim == 1:
        return (y_prob >= threshold).astype(int)
    return y_prob.argmax(1)


def classification_metrics(y_true, y_prob, threshold: float = 0.5, y_pred=None) -> dict:
    """`y_prob`: N probabilities of class 1 (binary) or N×K class probabilities; `y_true`: N integer labels.

    Thresholded metrics use `y_pred` when given (e.g. a model's own calibrated decisions), else `threshold`.
    Binary problems also report `F1` of the positive class."""
    from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, f1_score,
                                 roc_auc_score)

    y_true = np.asarray(y_true).astype(int)
    probs = _probabilities(y_prob)
    if len(y_true) != len(probs):
        raise ValueError(f"{len(y_true)} targets but {len(probs)} predictions")
    y_pred = predicted_labels(y_prob, threshold) if y_pred is None else np.asarray(y_pred).astype(int)
    if len(y_pred) != len(y_true):
        raise ValueError(f"{len(y_true)} targets but {len(y_pred)} predicted labels")
    k = probs.shape[1]
    in_targets, in_predictions = sorted({int(c) for c in y_true}), sorted({int(c) for c in y_pred})
    present = sorted(set(in_targets) | set(in_predictions))
    out = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)),
           "macro_F1": float(f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0)),
           "macro_F1_all_classes": float(f1_score(y_true, y_pred, average="macro", labels=list(range(k)),
                                                  zero_division=0)),
           "num_classes": int(k), "classes_in_targets": in_targets, "classes_in_predictions": in_predictions}
    if k == 2:
        out["F1"] = float(f1_score(y_true, y_pred, pos_label=1, zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
        present = np.unique(y_true)
        if len(present) < 2:
            out["AUROC"] = out["PR_AUC"] = float("nan")
        elif k == 2:
            out["AUROC"] = float(roc_auc_score(y_true, probs[:, 1]))
            out["PR_AUC"] = float(average_precision_score(y_true, probs[:, 1]))
        else:
            onehot = np.eye(k)[y_true]
            cols = [c for c in range(k) if 0 < onehot[:, c].sum() < len(y_true)]
            out["AUROC"] = float(np.mean([roc_auc_score(onehot[:, c], probs[:, c]) for c in cols]))
            out["PR_AUC"] = float(np.mean([average_precision_score(onehot[:, c], probs[:, c]) for c in cols]))
    return out
