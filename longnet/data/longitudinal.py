"""Longitudinal data layer shared by every method plugin: which visits belong to which subject, when they
were acquired, their visitsTr.csv columns, and (re-exported) the pair/sequence samplers, frozen validation
draws and the geometry helpers that keep visits in voxel correspondence.

Contract: docs/internals.md, "Longitudinal data layer". Everything here is plain data (no torch state), so
samplers can live in loader worker processes and every draw depends only on the Generator it is given.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from longnet.data.cases import CaseReader
from longnet.data.dataset_index import DatasetIndex
from longnet.errors import DatasetError
from longnet.io.storage import load_case


@dataclass(frozen=True)
class VisitInfo:
    """Everything known about one visit without loading its image: time, position, labels, CSV columns."""

    case: str
    subject: str
    days: float
    visit_index: int
    labelled: bool
    meta: dict = field(default_factory=dict)


class LongitudinalIndex:
    """Subjects and visits of one preprocessed configuration, restricted to a split side.

    `cases=None` means every preprocessed case. Cases listed but not preprocessed are an error (a stale
    split would otherwise silently shrink the training set). Subjects are sorted by name and their visits by
    (days, visit_index, case), so every process sees the same order and draws are reproducible.
    """

    def __init__(self, preprocessed_dataset_folder: str | Path, data_identifier: str,
                 cases: Iterable[str] | None = None, cache_size: int = 8):
        self.folder = Path(preprocessed_dataset_folder)
        self.data_identifier = data_identifier
        self.data_folder = self.folder / data_identifier
        full = DatasetIndex.load(self.folder, data_identifier)
        if cases is not None:
            cases = [str(c) for c in cases]
            present = set(full.cases)
            missing = [c for c in cases if c not in present]
            if missing:
                raise DatasetError(f"{len(missing)} case(s) of the split are not preprocessed in "
                                   f"{data_identifier} (e.g. {', '.join(missing[:3])})", self.data_folder)
            full = full.restrict(list(dict.fromkeys(cases)))
        self._index = full
        self._visits: dict[str, VisitInfo] = {}
        for c in full.cases:
            v = full.visits.get(c, {})
            days = v.get("days", 0.0)
            self._visits[c] = VisitInfo(
                case=c, subject=str(v.get("subject", c)),
                days=float(days) if days is not None and not _is_nan(days) else 0.0,
                visit_index=int(v.get("visit_index", 0) or 0), labelled=bool(v.get("labelled", True)),
                meta=dict(v.get("meta") or {}))
        grouped: dict[str, list[str]] = {}
        for c, v in self._visits.items():
            grouped.setdefault(v.subject, []).append(c)
        self._subjects = {s: sorted(cs, key=lambda c: (self._visits[c].days, self._visits[c].visit_index, c))
                          for s, cs in sorted(grouped.items())}
        self.reader = CaseReader(self.data_folder)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray, dict]] = OrderedDict()

    # --- metadata -------------------------------------------------------------------------------------
    @property
    def cases(self) -> list[str]:
        return list(self._visits)

    @property
    def subjects(self) -> dict[str, list[str]]:
        """{subject: [cases sorted by days]} (a fresh copy: callers may modify it)."""
        return {s: list(cs) for s, cs in self._subjects.items()}

    def visits_of(self, subject: str) -> list[str]:
        return list(self._subjects[subject])

    def visit(self, case: str) -> VisitInfo:
        try:
            return self._visits[case]
        except KeyError:
            raise DatasetError(f"case {case!r} is not part of this longitudinal index", self.data_folder) from None

    def days(self, case: str) -> float:
        """Days since the subject's baseline (visitsTr.csv `days`)."""
        return self.visit(case).days

    def meta(self, case: str) -> dict:
        """The visit's other visitsTr.csv columns (scores, targets); numbers as float, empty cells None."""
        return dict(self.visit(case).meta)

    def labelled(self, case: str) -> bool:
        return self.visit(case).labelled

    def subject_of(self, case: str) -> str:
        return self.visit(case).subject

    def columns(self) -> set[str]:
        """visitsTr.csv columns present for at least one visit of this index."""
        return {k for v in self._visits.values() for k in v.meta}

    def __len__(self) -> int:
        return len(self._visits)

    def __contains__(self, case: object) -> bool:
        return case in self._visits

    # --- arrays ---------------------------------------------------------------------------------------
    def load(self, case: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(data C×Z×Y×X float32, seg 1×Z×Y×X, props), fully decompressed.

        Kept in a small LRU cache because pair/sequence samplers revisit the same subject's visits; the arrays
        are read-only (copy before modifying in place) so one caller cannot corrupt another's sample.
        """
        self.visit(case)
        hit = self._cache.get(case)
        if hit is not None:
            self._cache.move_to_end(case)
            return hit
        data, seg, props = load_case(self.data_folder, case)
        data.flags.writeable = False
        seg.flags.writeable = False
        item = (data, seg, props)
        if self.cache_size > 0:
            self._cache[case] = item
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return item

    def open(self, case: str):
        """(data, seg, props) as lazily read blosc2 arrays: only a cropped box is decompressed."""
        self.visit(case)
        return self.reader.open(case)


def _is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)

__all__ = ["LongitudinalIndex", "VisitInfo"]
