"""The file names longnet derives from a case id, and the ids that would make two of them the same file.

A preprocessed case `X` is stored as `X.b2nd`, `X_seg.b2nd`, `X_locations.npz`, `X.json` (+ `X_to_reference.tfm`
when aligned) next to marker files such as `plan_fingerprint.json`. So a case named `X_seg` would overwrite the
segmentation of `X`, and a case named `plan_fingerprint` the marker: such ids are refused up front, naming both,
instead of silently mixing two cases. The names are defined here (the dataset layer) and used by the storage code,
so the check and the files can never disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from longnet.errors import DatasetError

# role -> suffix after the case id, for every file of one preprocessed case
CASE_FILE_SUFFIXES: dict[str, str] = {"data": ".b2nd", "seg": "_seg.b2nd", "locations": "_locations.npz",
                                      "props": ".json", "transform": "_to_reference.tfm"}
PLAN_FINGERPRINT_FILE = "plan_fingerprint.json"
DERIVED_INPUTS_FILE = "derived_inputs.json"
# files longnet itself writes next to (or one level above) the cases
MARKER_FILES: tuple[str, ...] = (PLAN_FINGERPRINT_FILE, DERIVED_INPUTS_FILE, "dataset.json", "dataset_fingerprint.json",
                                 "splits_final.json", "subjects.json", "visits.json")


def case_file_name(case_id: str, role: str) -> str:
    return f"{case_id}{CASE_FILE_SUFFIXES[role]}"


def check_case_id_collisions(case_ids: Iterable[str], file_of: Callable[[str], Path | str | None]) -> None:
    """Raise DatasetError (path: `file_of(case)`) if two cases, or a case and a marker, would share a file name.

    Names are compared case-insensitively: on macOS and Windows file systems `Case1.json` and `case1.json` are
    one file."""
    owner: dict[str, tuple[str | None, str]] = {m.casefold(): (None, m) for m in MARKER_FILES}
    for cid in sorted(case_ids):
        for role in CASE_FILE_SUFFIXES:
            name = case_file_name(cid, role)
            other, other_name = owner.setdefault(name.casefold(), (cid, name))
            if other == cid:
                continue
            if other is None:
                raise DatasetError(f"case id {cid!r} is reserved: its preprocessed file {name} would overwrite "
                                   f"longnet's own {other_name}; rename the case", file_of(cid))
            same = "" if name == other_name else " on case-insensitive file systems"
            raise DatasetError(f"case ids {other!r} and {cid!r} collide: both would be stored as {name}{same} in "
                               f"the preprocessed folder; rename one of them", file_of(cid))
