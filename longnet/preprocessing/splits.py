"""Subject-level 5-fold cross-validation splits in nnU-Net's format (KFold, shuffle, seed 12345).

Folds are drawn over sorted subject ids and expanded to their cases, so no subject is ever on both sides.
When every case is its own subject this is exactly nnU-Net's case-level split.

`splits_final.json` is either generated here (its SHA-256 is recorded in `derived_inputs.json`, so a changed subject
table regenerates it) or provided by the user (respected, but refused if it puts one subject on both sides)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from sklearn.model_selection import KFold

from longnet.io.case_names import DERIVED_INPUTS_FILE
from longnet.errors import DatasetError
from longnet.utils.files import load_json, save_json

SPLITS_FILE = "splits_final.json"
_GENERATED_KEY = "generated_splits_sha256"


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


def check_splits_format(splits, path: str | Path) -> list[dict]:
    """nnU-Net's format: a list of {"train": [case, ...], "val": [case, ...]}, case ids as strings."""
    if not isinstance(splits, list) or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list)
            and all(isinstance(c, str) for c in s["train"] + s["val"]) for s in splits):
        raise DatasetError("splits_final.json must be a list of {\"train\": [case ids], \"val\": [case ids]}", path)
    return splits


def check_subject_level(splits: list[dict], subjects: dict[str, list[str]], path: str | Path) -> None:
    """Refuse a split that puts visits of one subject in both train and val (they would leak into validation)."""
    check_splits_format(splits, path)
    subject_of = {c: s for s, cases in subjects.items() for c in cases}
    for k, fold in enumerate(splits):
        val = {}
        for c in fold["val"]:
            val.setdefault(subject_of.get(c, c), c)
        for c in fold["train"]:
            s = subject_of.get(c, c)
            if s in val:
                raise DatasetError(f"fold {k} puts subject {s!r} on both sides (case {c!r} in train, {val[s]!r} in "
                                   "val): visits of one subject must stay together (patientsTr.json); fix the file, "
                                   "or delete it to let longnet write subject-level splits", path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_record(pre_dir: Path) -> dict:
    """`derived_inputs.json` ({} if missing or damaged: then everything derived counts as stale)."""
    path = Path(pre_dir) / DERIVED_INPUTS_FILE
    try:
        record = load_json(path) if path.is_file() else {}
    except DatasetError:
        record = {}
    return record if isinstance(record, dict) else {}


def update_record(pre_dir: Path, **entries) -> None:
    record = read_record(pre_dir)
    if {**record, **entries} != record or not (Path(pre_dir) / DERIVED_INPUTS_FILE).is_file():
        save_json({**record, **entries}, Path(pre_dir) / DERIVED_INPUTS_FILE)


def generated_by_longnet(pre_dir: Path, previous_subjects: dict | None) -> bool:
    """Whether the existing splits_final.json is longnet's own: its hash was recorded when written, or (folders
    written before the record existed) it equals what longnet generates from the subject table of that time."""
    path = Path(pre_dir) / SPLITS_FILE
    recorded = read_record(pre_dir).get(_GENERATED_KEY)
    if recorded is not None:
        return recorded == _sha256(path)
    return isinstance(previous_subjects, dict) and load_json(path) == subject_level_splits(previous_subjects)


def plan_splits(pre_dir: Path, subjects: dict[str, list[str]], previous_subjects: dict | None) -> list[dict] | None:
    """What splits_final.json must become for `subjects`: folds to (re)write, [] to remove a generated file that
    no longer applies, None to keep the file as it is. A user's file that leaks a subject raises DatasetError.
    Nothing is written here, so a refusal leaves the folder untouched."""
    path = Path(pre_dir) / SPLITS_FILE
    folds = subject_level_splits(subjects)
    if not path.is_file():
        return folds or None
    if generated_by_longnet(pre_dir, previous_subjects):
        return None if load_json(path) == folds else folds
    check_subject_level(load_json(path), subjects, path)
    return None


def write_generated_splits(pre_dir: Path, folds: list[dict]) -> None:
    """Write (or, for [], remove) longnet's own splits_final.json and record its hash."""
    path = Path(pre_dir) / SPLITS_FILE
    if not folds:
        path.unlink(missing_ok=True)
        update_record(pre_dir, **{_GENERATED_KEY: None})
        return
    save_json(folds, path)
    update_record(pre_dir, **{_GENERATED_KEY: _sha256(path)})
