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
