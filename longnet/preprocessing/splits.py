"""Subject-level 5-fold cross-validation splits in nnU-Net's format (KFold, shuffle, seed 12345).

Folds are drawn over sorted subject ids and expanded to their cases, so no subject is ever on both sides.
When every case is its own subject this is exactly nnU-Net's case-level split."""
from __future__ import annotations

from sklearn.model_selection import KFold


def subject_level_splits(subjects: dict[str, list[str]], n_splits: int = 5, seed: int = 12345) -> list[dict]:
    ids = sorted(subjects)
    n_splits = min(n_splits, len(ids))  # fewer subjects than folds: one subject per fold
    if n_splits < 2:
        return []
    splits = []
    for train_idx, val_idx in KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(ids):
        train = sorted(c for i in train_idx for c in subjects[ids[i]])
        val = sorted(c for i in val_idx for c in subjects[ids[i]])
        splits.append({"train": train, "val": val})
    return splits
