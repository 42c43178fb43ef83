"""Which cases a preprocessed dataset holds, which subject/visit each is, and whether it is labelled.

Read from `visits.json` / `subjects.json` (written by longnet preprocessing). A folder preprocessed by nnU-Net
has neither; then every case is its own subject and the case properties (if any) say whether it is labelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from longnet.errors import DatasetError
from longnet.io.storage import case_paths, list_cases
from longnet.utils.files import load_json


@dataclass
class DatasetIndex:
    """Cases of one preprocessed configuration folder plus their longitudinal metadata."""

    cases: list[str]
    visits: dict[str, dict] = field(default_factory=dict)
    subjects: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def load(cls, dataset_folder: str | Path, data_identifier: str) -> "DatasetIndex":
        dataset_folder = Path(dataset_folder)
        data_folder = dataset_folder / data_identifier
        if not data_folder.is_dir():
            raise DatasetError(f"preprocessed data folder {data_identifier!r} not found (run longnet_preprocess for "
                               f"this configuration)", data_folder)
        cases = list_cases(data_folder)
        visits_file, subjects_file = dataset_folder / "visits.json", dataset_folder / "subjects.json"
        visits = load_json(visits_file) if visits_file.is_file() else {}
        subjects = load_json(subjects_file) if subjects_file.is_file() else {}
        if not isinstance(visits, dict) or not isinstance(subjects, dict):
            raise DatasetError("visits.json / subjects.json must contain JSON objects", dataset_folder)
        for i, c in enumerate(cases):
            if c not in visits:
                props = load_json(case_paths(data_folder, c)["props"])
                visits[c] = {"subject": props.get("subject", c), "days": float(props.get("days", 0.0)),
                             "visit_index": 0, "labelled": bool(props.get("labelled", True)), "meta": {}}
        if not subjects:
            for c in cases:
                subjects.setdefault(str(visits[c].get("subject", c)), []).append(c)
            for s, cs in subjects.items():
                cs.sort(key=lambda c: float(visits[c].get("days", 0.0)))
        return cls(cases, visits, subjects, str(dataset_folder))

    def labelled(self, case: str) -> bool:
        return bool(self.visits.get(case, {}).get("labelled", True))

    def subject_of(self, case: str) -> str:
        return str(self.visits.get(case, {}).get("subject", case))

    def restrict(self, case_ids: list[str]) -> "DatasetIndex":
        """The same index limited to `case_ids` (e.g. one fold's training cases), subjects kept in time order."""
        keep = [c for c in case_ids if c in set(self.cases)]
        keep_set = set(keep)
        subjects = {s: [c for c in cs if c in keep_set] for s, cs in self.subjects.items()}
        return DatasetIndex(keep, {c: self.visits[c] for c in keep if c in self.visits},
                            {s: cs for s, cs in subjects.items() if cs}, self.source)

    def columns(self) -> set[str]:
        """Names of the per-visit columns (from visitsTr.csv) present for at least one case."""
        cols: set[str] = set()
        for v in self.visits.values():
            cols.update((v.get("meta") or {}).keys())
        return cols


def select_labelled_subjects(index: DatasetIndex, cases: list[str], n_subjects: int, seed: int) -> list[str]:
    """The labelled cases of `n_subjects` subjects drawn from `cases` (a training split), for one-/few-shot runs.

    Eligible subjects are those with at least one labelled visit in `cases`, sorted by name; `n_subjects` of
    them are drawn with `numpy.random.default_rng(seed)` (no replacement), so the same seed picks the same
    subjects for every trainer that uses this budget. All labelled visits of a chosen subject are returned,
    in the order of `cases`; visits of the other subjects are treated as unlabelled.
    """
    import numpy as np

    if n_subjects < 1:
        raise DatasetError(f"the number of labelled subjects must be >= 1, got {n_subjects}", index.source or None)
    labelled = [c for c in cases if c not in index.visits or index.labelled(c)]
    eligible = sorted({index.subject_of(c) for c in labelled})
    if n_subjects > len(eligible):
        raise DatasetError(f"{n_subjects} labelled subject(s) requested but the training split has only "
                           f"{len(eligible)} subject(s) with a labelled visit", index.source or None)
    chosen = {eligible[int(i)] for i in np.random.default_rng(int(seed)).choice(len(eligible), n_subjects,
                                                                                  replace=False)}
    return [c for c in labelled if index.subject_of(c) in chosen]
