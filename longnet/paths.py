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


def _get(var: str) -> Path:
    value = os.environ.get(var) or os.environ.get(_FALLBACKS[var])
    if not value:
        raise LongnetError(f"environment variable {var} (or {_FALLBACKS[var]}) is not set")
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
    if root is None:
        for getter in (raw_root, preprocessed_root, results_root):
            try:
                roots.append(getter())
            except LongnetError:
                pass
    found = set()
    for r in roots:
        if r is not None and r.is_dir():
            for child in r.iterdir():
                m = _DATASET_RE.match(child.name)
                if m and int(m.group(1)) == wanted:
                    found.add(child.name)
    if not found:
        raise LongnetError(f"no dataset with id {wanted} found in {', '.join(str(r) for r in roots) or '(no roots set)'}")
    if len(found) > 1:
        raise LongnetError(f"dataset id {wanted} is ambiguous: {sorted(found)}")
    return found.pop()
