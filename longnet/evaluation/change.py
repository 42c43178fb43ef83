"""Three-way health-change classes between two visits (improve / stable / worsen) from a score difference.

One definition serves training (LEARNER's change classifier) and evaluation (`longnet_evaluate --task
classification --delta D`), so the targets a model is trained on and scored against cannot drift apart.
Class k: 0 = improve, 1 = stable, 2 = worsen. `higher_is_healthier` fixes the sign convention (MMSE, S/F:
higher = healthier); a change counts only when |Δscore| exceeds `delta` strictly.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

CHANGE_CLASSES = ("improve", "stable", "worsen")


def change_class(score_change: float, delta: float, higher_is_healthier: bool = True) -> int:
    """Class index of a score change (later minus earlier visit)."""
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    signed = score_change if higher_is_healthier else -score_change
    if signed > delta:
        return 0
    if signed < -delta:
        return 2
    return 1


def consecutive_pairs(subjects: Mapping[str, Sequence[str]], scores: Mapping[str, float] | None = None
                      ) -> list[tuple[str, str, str]]:
    """(subject, earlier case, later case) for consecutive visits; with `scores`, visits without a finite
    score are skipped first (the pair joins the visits around them)."""
    out = []
    for subject, cases in subjects.items():
        visits = [c for c in cases if scores is None or _finite(scores.get(c))]
        out += [(subject, a, b) for a, b in zip(visits[:-1], visits[1:])]
    return out


def change_targets(pairs: Sequence[tuple[str, str]], scores: Mapping[str, float], delta: float,
                   higher_is_healthier: bool = True) -> dict[tuple[str, str], int]:
    """{(earlier, later): class} for every pair whose two visits have a finite score."""
    out = {}
    for a, b in pairs:
        if _finite(scores.get(a)) and _finite(scores.get(b)):
            out[(a, b)] = change_class(float(scores[b]) - float(scores[a]), delta, higher_is_healthier)
    return out


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def evaluate_change_predictions(rows: Sequence[Mapping[str, str]], scores: Mapping[str, float], delta: float,
                                higher_is_healthier: bool = True,
                                subjects: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Metrics of per-pair change predictions against targets recomputed from reference scores.

    `rows`: CSV rows with `case` (the later visit), `prob_0..prob_2` and `case_from` (the earlier visit; without
    it the predecessor of `case` in `subjects` is used). Pairs lacking a score on either side are skipped.
    `macro_F1` averages F1 over the classes that occur in the targets or the predictions (`present_classes`
    names them); `macro_F1_all_classes` counts a class that never occurs as F1 = 0 (the demo cohort, for one,
    has no improving pair)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from longnet.evaluation.classification import classification_metrics

    previous = {b: a for cases in (subjects or {}).values() for a, b in zip(list(cases)[:-1], list(cases)[1:])}
    prob_cols = [f"prob_{k}" for k in range(len(CHANGE_CLASSES))]
    if not rows or any(c not in rows[0] for c in prob_cols):
        raise ValueError(f"change predictions need columns case, case_from, {', '.join(prob_cols)}")
    pairs, y_true, y_prob = [], [], []
    for r in rows:
        a, b = r.get("case_from") or previous.get(r["case"]), r["case"]
        if a is None or not (_finite(scores.get(a)) and _finite(scores.get(b))):
            continue
        pairs.append([a, b])
        y_true.append(change_class(float(scores[b]) - float(scores[a]), delta, higher_is_healthier))
        y_prob.append([float(r[c]) for c in prob_cols])
    if not pairs:
        raise ValueError("no predicted pair has reference scores on both visits")
    y_true_arr, y_prob_arr = np.asarray(y_true), np.asarray(y_prob)
    metrics = classification_metrics(y_true_arr, y_prob_arr)
    y_pred = y_prob_arr.argmax(1)
    present = sorted(set(metrics["classes_in_targets"]) | set(metrics["classes_in_predictions"]))
    metrics["present_classes"] = [CHANGE_CLASSES[k] for k in present]
    metrics["per_class_F1"] = {name: float(v) for name, v in zip(CHANGE_CLASSES, f1_score(
        y_true_arr, y_pred, labels=list(range(len(CHANGE_CLASSES))), average=None, zero_division=0))}
    counts = {name: int(np.sum(y_true_arr == k)) for k, name in enumerate(CHANGE_CLASSES)}
    return {"classes": list(CHANGE_CLASSES), "delta": float(delta), "higher_is_healthier": bool(higher_is_healthier),
            "target_counts": counts, "metrics": metrics, "pairs": pairs}
