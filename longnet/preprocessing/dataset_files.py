"""The dataset-level files of a preprocessed folder, derived from the raw dataset and kept in step with it.

`dataset.json` (copy), `subjects.json`, `visits.json`, `gt_segmentations/`, `splits_final.json` and
`dataset_fingerprint.json` are derived from dataset.json, patientsTr.json, visitsTr.csv and the case list. A rerun
after any of those changed must not keep the old ones (a patientsTr.json added later would otherwise leave folds
that split subjects), so hashes of the inputs are recorded in `derived_inputs.json` and each file is rewritten when
its inputs (or its content) no longer match. Everything that can refuse runs in `plan`, before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from longnet.dataset.raw import RawDataset
from longnet.preprocessing.splits import plan_splits, read_record, update_record, write_generated_splits
from longnet.utils.files import atomic_path, load_json, save_json

FINGERPRINT_FILE = "dataset_fingerprint.json"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def fingerprint_inputs(raw: RawDataset) -> str:
    """What the fingerprint reads: dataset.json and every case's files (names and sizes: a replaced file shows)."""
    cases = {c: [[p.name, p.stat().st_size] for p in v.images]
             + ([[v.label.name, v.label.stat().st_size]] if v.label is not None else [])
             for c, v in raw.cases.items()}
    return _hash({"dataset.json": _file_digest(raw.dataset_json_path), "cases": cases})


def subject_inputs(raw: RawDataset) -> str:
    """What subjects.json, visits.json and the generated splits come from."""
    folder, side = raw.folder, raw.side
    return _hash({"patients": _file_digest(folder / f"patients{side}.json"),
                  "visits": _file_digest(folder / f"visits{side}.csv"),
                  "cases": {c: v.label is not None for c, v in raw.cases.items()}})


def visits_content(raw: RawDataset) -> dict:
    return {c: {"days": v.days, "days_known": v.days_known, "subject": v.subject, "visit_index": v.visit_index,
                "labelled": v.label is not None, "meta": v.meta} for c, v in raw.cases.items()}


def _json_or_none(path: Path):
    try:
        return load_json(path) if path.is_file() else None
    except Exception:  # a damaged derived file is simply rewritten
        return None


def _copy_if_changed(src: Path, dest: Path) -> None:
    if not dest.is_file() or dest.read_bytes() != src.read_bytes():
        with atomic_path(dest, suffix=src.suffix) as tmp:
            shutil.copyfile(src, tmp)


@dataclass
class DatasetFiles:
    """The plan for one preprocessed dataset folder: what is stale, and what to write."""

    raw: RawDataset
    pre_dir: Path
    record: dict
    splits: list[dict] | None

    @classmethod
    def plan(cls, raw: RawDataset, pre_dir: str | Path) -> "DatasetFiles":
        """Compare the folder with `raw`; refuses (DatasetError) a user's splits file that now leaks a subject."""
        pre_dir = Path(pre_dir)
        previous = _json_or_none(pre_dir / "subjects.json")
        splits = plan_splits(pre_dir, raw.subjects, previous)
        return cls(raw, pre_dir, read_record(pre_dir), splits)

    @property
    def fingerprint_current(self) -> bool:
        return (self.pre_dir / FINGERPRINT_FILE).is_file() \
            and self.record.get("fingerprint_inputs") == fingerprint_inputs(self.raw)

    def write(self, fingerprint: dict | None, fingerprint_checked: bool = True) -> None:
        """Write what is stale; `fingerprint` (if newly computed) last but one, the record of inputs last.

        `fingerprint_checked` False (preprocessing alone): the fingerprint's inputs are not recorded as current."""
        self.pre_dir.mkdir(parents=True, exist_ok=True)
        _copy_if_changed(self.raw.dataset_json_path, self.pre_dir / "dataset.json")
        self._write_if_changed(self.pre_dir / "subjects.json", self.raw.subjects)
        self._write_if_changed(self.pre_dir / "visits.json", visits_content(self.raw))
        self._sync_gt_segmentations()
        if self.splits is not None:
            write_generated_splits(self.pre_dir, self.splits)
        if fingerprint is not None:
            save_json(fingerprint, self.pre_dir / FINGERPRINT_FILE)
        entries = {"subject_inputs": subject_inputs(self.raw)}
        if fingerprint_checked:
            entries["fingerprint_inputs"] = fingerprint_inputs(self.raw)
        update_record(self.pre_dir, **entries)

    @staticmethod
    def _write_if_changed(path: Path, content) -> None:
        if _json_or_none(path) != content:
            save_json(content, path)

    def _sync_gt_segmentations(self) -> None:
        """Copies of the label files (nnU-Net's gt_segmentations/): new or resized ones copied, stale ones removed."""
        raw, gt = self.raw, self.pre_dir / "gt_segmentations"
        gt.mkdir(exist_ok=True)
        wanted: set[str] = set()
        for cid, case in raw.cases.items():
            if case.label is None:
                continue
            sidecar = case.label.with_name(f"{cid}.json")  # 3D TIFF spacing (Tiff3DIO)
            for src in (case.label, sidecar) if sidecar.is_file() else (case.label,):
                wanted.add(src.name)
                dest = gt / src.name
                if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
                    with atomic_path(dest, suffix=raw.file_ending if src == case.label else src.suffix) as tmp:
                        shutil.copyfile(src, tmp)
        for p in gt.iterdir():
            if p.is_file() and not p.name.startswith(".") and p.name not in wanted:
                p.unlink()
