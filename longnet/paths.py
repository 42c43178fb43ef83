"""Where raw data, preprocessed data and results live (LONGNET_* env vars, falling back to nnU-Net's names)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from longnet.errors import LongnetError

_FALLBACKS = {
    "LONGNET_RAW": "nnUNet_raw",
    "LONGNET_PREPROCESSED": "nnUNet_preprocessed",
    "LONGNET_RESULTS": "nnUNet_results",
}


_HOLDS = {"LONGNET_RAW": "raw datasets (DatasetXXX_Name/)", "LONGNET_PREPROCESSED": "preprocessed data",
          "LONGNET_RESULTS": "trained models"}


def _get(var: str) -> Path:
    value = os.environ.get(var) or os.environ.get(_FALLBACKS[var])
    if not value:
        raise LongnetError(f"environment variable {var} (or {_FALLBACKS[var]}) is not set: export it as the folder "
                           f"that holds the {_HOLDS[var]}, e.g. `export {var}=...` (longnet_demo prints the lines "
                           "for its data)")
    return Path(value)


def raw_root() -> Path:
    return _get("LONGNET_RAW")


def preprocessed_root() -> Path:
    return _get("LONGNET_PREPROCESSED")


def results_root() -> Path:
    return _get("LONGNET_RESULTS")


_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


def dataset_name_from_id(dataset: str | int, root: Path | None = None) -> str:
    """Resolve '4', '004' or 'Dataset004_Hippocampus' to the folder name found under raw or preprocessed."""
    text = str(dataset)
    if _DATASET_RE.match(text):
        return text
    if not text.isdigit():
        raise LongnetError(f"dataset must be an integer id or a DatasetXXX_Name folder name, got {text!r}")
    wanted = int(text)
    roots = [root] if root is not None else []
    unset = []
    if root is None:
        for var, getter in (("LONGNET_RAW", raw_root), ("LONGNET_PREPROCESSED", preprocessed_root),
                            ("LONGNET_RESULTS", results_root)):
            try:
                roots.append(getter())
            except LongnetError:
                unset.append(var)
    if not roots:
        raise LongnetError(f"no dataset with id {wanted}: none of {', '.join(unset)} is set (nnU-Net's nnUNet_raw, "
                           "nnUNet_preprocessed, nnUNet_results are read too); export them, e.g. "
                           "`export LONGNET_RAW=~/data/raw LONGNET_PREPROCESSED=~/data/pre "
                           "LONGNET_RESULTS=~/data/results` (longnet_demo prints the lines for its data)")
    found, others = set(), set()
    for r in roots:
        if r is not None and r.is_dir():
            for child in r.iterdir():
                m = _DATASET_RE.match(child.name)
                if m and int(m.group(1)) == wanted:
                    found.add(child.name)
                elif m:
                    others.add(child.name)
    if not found:
        where = ", ".join(str(r) for r in roots)
        also = f" ({', '.join(unset)} not set)" if unset else ""
        have = f"; datasets there: {', '.join(sorted(others))}" if others else ""
        raise LongnetError(f"no dataset with id {wanted} found in {where}{also}{have}. A raw dataset belongs in "
                           f"$LONGNET_RAW/Dataset{wanted:03d}_<Name>/; `longnet_plan_and_preprocess -d {wanted}` "
                           "then preprocesses it for training")
    if len(found) > 1:
        raise LongnetError(f"dataset id {wanted} is ambiguous: {sorted(found)}")
    return found.pop()
