"""Atomic file writes: a crash never leaves a half-written output behind (temp file + os.replace).

Every write failure (full disk, read-only file system, no permission) that happens inside `atomic_path` becomes
one LongnetError naming the destination, so the CLIs report it in one line instead of a traceback."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from longnet.errors import DatasetError, LongnetError

# errnos that can only mean "the destination cannot take the write"
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_LOW_SPACE_BYTES = 1 << 20


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


def write_error(error: BaseException, dest: str | Path) -> LongnetError:
    """The one-line user error for a failed write of `dest` ("cannot write (No space left on device)")."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return LongnetError(f"cannot write ({reason})", dest)


def disk_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot take writes (read-only, or full: blocks or inodes), else None.

    Libraries such as torch.save and blosc2 report a full disk as a RuntimeError without an errno; asking the file
    system afterwards tells a write failure from a bug."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    if st.f_flag & getattr(os, "ST_RDONLY", 1):
        return os.strerror(errno.EROFS)
    free_blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    if free_blocks * st.f_frsize < _LOW_SPACE_BYTES or (st.f_files and st.f_favail == 0):
        return os.strerror(errno.ENOSPC)
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_exhausted(folder: str | Path) -> bool:
    """No room left at all (under one page): a writer that did not raise may have cut its file short."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    free_blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return free_blocks * st.f_frsize < 4096


def _is_write_failure(error: BaseException, own_paths: set[str]) -> bool:
    """An OSError about one of our own paths (or without a path: a failed write() call), or any error while the
    destination's file system is full or read-only. An OSError naming another file (an unreadable source) is not."""
    if isinstance(error, OSError):
        names = {str(n) for n in (error.filename, error.filename2) if n is not None}
        return error.errno in _WRITE_ERRNOS or not names or bool(names & own_paths)
    return False


@contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it onto `dest` only if the block succeeds.

    A write failure (in here or in the block) raises LongnetError "cannot write (...)" naming `dest`. A symbolic
    link is followed (its target is replaced, the link stays); anything else that is not a regular file (a device,
    a FIFO, a folder) is refused, never replaced."""
    dest = Path(dest)
    if dest.is_symlink():
        dest = Path(os.path.realpath(dest))
    if dest.exists() and not dest.is_file():
        raise LongnetError("refusing to write: the output path exists and is not a regular file (a device, pipe or "
                           "folder); name a file", dest)
    tmp_path: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + suffix, dir=dest.parent)
        os.close(fd)
    except OSError as e:  # creating the folder or the temp file: always ours
        raise write_error(e, dest) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if _disk_exhausted(dest.parent):  # SimpleITK reports a full disk on stderr only: never publish that file
            raise LongnetError(f"cannot write ({os.strerror(errno.ENOSPC)})", dest)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files private; outputs get the usual permissions
        os.replace(tmp_path, dest)
    except LongnetError:
        raise
    except Exception as e:
        own = {str(tmp_path), str(dest), str(dest.parent)}
        if _is_write_failure(e, own):
            raise write_error(e, dest) from None
        problem = disk_problem(dest.parent)
        if problem is not None:
            raise LongnetError(f"cannot write ({problem})", dest) from None
        raise
    finally:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass


def save_json(obj: Any, dest: str | Path, indent: int = 4, sort_keys: bool = False) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=_json_default)


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """object_pairs_hook: Python's json silently keeps the last of two equal keys; refuse them instead."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; malformed files, and objects with a duplicate key, raise DatasetError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise DatasetError(f"duplicate key {e.key!r}: JSON would silently keep only the last one; merge or rename "
                           "the entries", path) from None
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", path) from None
    except UnicodeDecodeError:
        raise DatasetError("not valid JSON (not UTF-8 text)", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read file ({e.strerror})", path) from None


def staging_dir(parent: str | Path, prefix: str, suffix: str = "") -> Path:
    """A hidden folder in `parent` to build an output in before renaming it into place, with the permissions an
    ordinary folder gets (mkdtemp makes it private)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def staging_folder(root: Path, name: str) -> Path:
    """Where dataset `name` is built before it is renamed into `root`."""
    return staging_dir(root, f".{name}.", ".converting")


def remove_stale_temp_files(folder: str | Path) -> None:
    """Remove leftovers of writes interrupted by a crash (names made by atomic_path)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp*"):
            p.unlink(missing_ok=True)
