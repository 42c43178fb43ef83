"""Atomic file writes: a crash never leaves a half-written output behind (temp file + os.replace)."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


@contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_json(obj: Any, dest: str | Path, indent: int = 4, sort_keys: bool = False) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=_json_default)


def load_json(path: str | Path) -> Any:
    from longnet.errors import DatasetError

    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", path) from None
    except UnicodeDecodeError:
        raise DatasetError("not valid JSON (not UTF-8 text)", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read file ({e.strerror})", path) from None


def remove_stale_temp_files(folder: str | Path) -> None:
    """Remove leftovers of writes interrupted by a crash (names made by atomic_path)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp*"):
            p.unlink(missing_ok=True)
