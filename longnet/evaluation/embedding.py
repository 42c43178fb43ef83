"""Trajectory smoothness of learned representations: mean consecutive cosine distance (MCCD).

Per subject, visits in time order, mean over k of 1 − cos(e_k, e_{k+1}); then averaged over subjects (each
subject counts once, however many visits it has). Range [0, 2]; 0 = the embedding does not move.
Also the references it is read against: mean distance between subjects, and (LEARNER) the Spearman ρ between
consecutive-visit distance and the change of a clinical score.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def cosine_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(1.0 - np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), eps))


def subject_mccd(trajectory: Sequence[np.ndarray]) -> float:
    """MCCD of one subject's embeddings in time order; NaN with fewer than two visits."""
    if len(trajectory) < 2:
        return float("nan")
    return float(np.mean([cosine_distance(a, b) for a, b in zip(trajectory[:-1], trajectory[1:])]))


def mccd(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]]) -> dict:
    """{"MCCD": mean over subjects with ≥ 2 embedded visits, "per_subject": {...}, "num_subjects": n}."""
    per_subject = {}
    for subject, cases in subjects.items():
        traj = [embeddings[c] for c in cases if c in embeddings]
        if len(traj) >= 2:
            per_subject[subject] = subject_mccd(traj)
    values = list(per_subject.values())
    return {"MCCD": float(np.mean(values)) if values else float("nan"), "num_subjects": len(values),
            "per_subject": per_subject}


def load_embeddings(path) -> dict[str, np.ndarray]:
    """Read `embeddings.npz`: either one array per case id, or arrays `cases` (ids) + `embeddings` (N×D)."""
    with np.load(path, allow_pickle=False) as z:
        if "cases" in z.files and "embeddings" in z.files:
            return {str(c): np.asarray(e) for c, e in zip(z["cases"], z["embeddings"])}
        return {k: np.asarray(z[k]) for k in z.files}


def between_subject_distance(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]]) -> dict:
    """Mean cosine distance between scans of *different* subjects: per subject pair the mean over all their
    scan pairs, then the mean over subject pairs (each pair of subjects counts once). The reference MCCD is
    compared with: a representation that tracks subjects has MCCD well below this value."""
    groups = [np.stack([_unit(embeddings[c]) for c in cases if c in embeddings])
              for cases in subjects.values() if any(c in embeddings for c in cases)]
    values = [float(np.mean(1.0 - a @ b.T)) for i, a in enumerate(groups) for b in groups[i + 1:]]
    return {"between_subject_distance": float(np.mean(values)) if values else float("nan"),
            "num_subject_pairs": len(values)}


def within_subject_distance(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]]) -> float:
    """Mean cosine distance over all visit pairs of one subject (not only consecutive), averaged over subjects."""
    values = []
    for cases in subjects.values():
        e = [_unit(embeddings[c]) for c in cases if c in embeddings]
        if len(e) >= 2:
            m = np.stack(e)
            iu = np.triu_indices(len(e), 1)
            values.append(float(np.mean(1.0 - (m @ m.T)[iu])))
    return float(np.mean(values)) if values else float("nan")


def distance_change_correlation(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]],
                                scores: Mapping[str, float]) -> dict:
    """Spearman ρ between the cosine distance of consecutive visits' embeddings and |Δscore| over all
    intra-subject consecutive pairs (LEARNER's diagnostic: distance should grow with clinical change)."""
    dist, change = [], []
    for cases in subjects.values():
        visits = [c for c in cases if c in embeddings and _finite(scores.get(c))]
        for a, b in zip(visits[:-1], visits[1:]):
            dist.append(cosine_distance(embeddings[a], embeddings[b]))
            change.append(abs(float(scores[b]) - float(scores[a])))
    return {"spearman_distance_vs_abs_score_change": _spearman(dist, change), "num_pairs": len(dist)}


def between_subject_gap_correlation(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]],
                                    scores: Mapping[str, float]) -> dict:
    """Spearman ρ between the cosine distance of two scans of *different* subjects and their |score gap|, over
    all such scan pairs: what LEARNER's weighted contrastive loss trains (distance proportional to the gap), read
    on held-out scans."""
    owner = {c: s for s, cases in subjects.items() for c in cases}
    cases = [c for c in embeddings if c in owner and _finite(scores.get(c))]
    if len(cases) < 2:
        return {"spearman_between_subject_distance_vs_score_gap": float("nan")}
    m = np.stack([_unit(embeddings[c]) for c in cases])
    s = np.array([float(scores[c]) for c in cases])
    subject = np.array([owner[c] for c in cases])
    i, j = np.triu_indices(len(cases), 1)
    keep = subject[i] != subject[j]
    dist, gap = (1.0 - m @ m.T)[i, j][keep], np.abs(s[i] - s[j])[keep]
    return {"spearman_between_subject_distance_vs_score_gap": _spearman(dist, gap)}


def first_component_share(embeddings: Mapping[str, np.ndarray]) -> float:
    """Fraction of the variance of the unit-normalised embeddings along their first principal component: near 1
    means the representation is essentially one-dimensional (e.g. a score regressor's features)."""
    if len(embeddings) < 2:
        return float("nan")
    m = np.stack([_unit(e) for e in embeddings.values()])
    sv = np.linalg.svd(m - m.mean(0), compute_uv=False) ** 2
    return float(sv[0] / sv.sum()) if sv.sum() > 0 else float("nan")


def embedding_summary(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]],
                      scores: Mapping[str, float] | None = None) -> dict:
    """Everything `longnet_evaluate --task embedding` reports: MCCD, within/between-subject distances (and
    their ratio), the first principal component's share of variance, plus (scores given) the Spearman ρ of
    consecutive-visit distance with |Δscore| and of between-subject distance with the score gap."""
    out = mccd(embeddings, subjects)
    out["mean_within_subject_distance"] = within_subject_distance(embeddings, subjects)
    out.update(between_subject_distance(embeddings, subjects))
    between = out["between_subject_distance"]
    out["MCCD_over_between"] = float(out["MCCD"] / between) if between and between == between else float("nan")
    out["first_component_variance_share"] = first_component_share(embeddings)
    if scores is not None:
        out.update(distance_change_correlation(embeddings, subjects, scores))
        out.update(between_subject_gap_correlation(embeddings, subjects, scores))
    return out


def _spearman(x, y) -> float:
    """Spearman ρ; NaN with fewer than 3 pairs or a constant side (where it is undefined)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _unit(e: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    e = np.asarray(e, np.float64).ravel()
    return e / max(float(np.linalg.norm(e)), eps)


def _finite(x) -> bool:
    try:
        return x is not None and np.isfinite(float(x))
    except (TypeError, ValueError):
        return False
