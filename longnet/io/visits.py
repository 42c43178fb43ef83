"""The one reader of visits CSVs (`case,days,score,...`): the raw dataset, prediction and evaluation all use it,
so a file means the same everywhere.

Rules: UTF-8 with or without a byte-order mark; a header naming `case`; no column twice; case ids and cell values
stripped of surrounding spaces. A cell is a float when it parses as a finite number, None when empty or NaN
("nan", "NA" and empty cells all mean "not recorded"), otherwise the string. `days`, where given, must be a finite
number.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from longnet.errors import LongnetError
from longnet.utils.files import load_json

MISSING = ("", "nan", "na", "n/a", "none", "null")


def cell_value(text: str | None) -> float | str | None:
    """A CSV cell as a finite float, None (empty / NaN / NA) or the stripped string."""
    if text is None or text.strip().lower() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        return text.strip()
    return value if math.isfinite(value) else None


def read_visit_rows(path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: raw text}) of every data row; the header must name 'case' and no column twice."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise LongnetError(f"cannot read visits CSV ({getattr(e, 'strerror', None) or e})", path) from None
    doubled = sorted({h for h in header if header.count(h) > 1})
    if doubled:  # DictReader would keep only the last of the two columns
        raise LongnetError(f"column {doubled[0]!r} appears twice in the header", path)
    if "case" not in header:
        raise LongnetError("visits CSV needs a header with a 'case' column", path)
    return [(line, {(k or "").strip(): v for k, v in row.items() if k is not None})
            for line, row in enumerate(rows, start=2)]


def read_visits_csv(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """{case: {column: float, str or None}} (without 'case'); {} without a path. Non-numeric days are an error."""
    if not path:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for line, row in read_visit_rows(path):
        case = (row.get("case") or "").strip()
        if not case:
            continue
        values = {k: cell_value(v) for k, v in row.items() if k != "case"}
        if "days" in row and row["days"] not in (None, "") and not isinstance(values["days"], float):
            raise LongnetError(f"line {line}: 'days' of case {case!r} is not a finite number ({row['days']!r})", path)
        out[case] = values
    return out


def visit_days(path: str | Path | None) -> dict[str, float]:
    """{case: days} of the cases whose day is recorded."""
    return {c: v["days"] for c, v in read_visits_csv(path).items() if isinstance(v.get("days"), float)}


def subjects_for_cases(cases: Sequence[str], patients: str | Path | dict | None,
                       visits: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """{subject: [cases in time order]} restricted to `cases`: from a patients json (order as listed, or by the
    visits CSV's `days` when given); cases not listed are their own subject."""
    table = load_json(patients) if isinstance(patients, (str, Path)) else (patients or {})
    if not isinstance(table, dict):
        raise LongnetError("patients file must map subject -> [case, ...]", patients)
    present = set(cases)
    visits = visits or {}
    out: dict[str, list[str]] = {}
    for subject, listed in table.items():
        cs = [str(c) for c in listed if str(c) in present]
        if all(isinstance(visits.get(c, {}).get("days"), float) for c in cs):
            cs.sort(key=lambda c: visits[c]["days"])
        if cs:
            out[str(subject)] = cs
    seen = {c for cs in out.values() for c in cs}
    for c in cases:
        if c not in seen:
            out[c] = [c]
    return out
