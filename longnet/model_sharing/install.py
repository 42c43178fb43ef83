"""Install a model zip into the results folder, refusing any zip that could write outside it.

Every member is checked before anything is written: absolute names, drive letters, backslashes, `..` parts,
symbolic links and other special files refuse the whole zip. Accepted members are extracted into a hidden
staging folder inside the results root (CRC-checked while reading) and only then moved into place, so a
refused or corrupt zip leaves the results folder as it was.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from longnet.utils.files import staging_dir
from longnet.errors import LongnetError

_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this member must not be extracted, or None when it is a plain file or folder inside the root."""
    name = info.filename
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    if "\\" in name:
        return "contains a backslash (a path separator on Windows)"
    if name.startswith("/") or _DRIVE_RE.match(name):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "leads outside the results folder ('..')"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or folder"
    if not [p for p in PurePosixPath(name).parts if p not in ("", ".")]:
        return "names the results folder itself"
    return None


def _relative(info: zipfile.ZipInfo) -> Path:
    return Path(*[p for p in PurePosixPath(info.filename).parts if p not in ("", ".")])


def _check_destination(root: Path, files: list[Path], folders: list[Path]) -> None:
    """A file may not land on an existing folder, nor a folder on an existing file (both would fail half-way)."""
    for rel in files:
        if (root / rel).is_dir():
            raise LongnetError("refusing to install: a folder exists where the zip has a file", root / rel)
    for rel in {parent for rel in files for parent in rel.parents if parent != Path(".")} | set(folders):
        target = root / rel
        if target.exists() and not target.is_dir():
            raise LongnetError("refusing to install: a file exists where the zip has a folder", target)


def plan_install(zip_path: str | Path) -> list[zipfile.ZipInfo]:
    """The members to extract, after checking every one of them; raises LongnetError on the first bad one."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise LongnetError("zip file not found", zip_path)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise LongnetError(f"not a readable zip file ({e})", zip_path) from None
    for info in infos:
        problem = member_problem(info)
        if problem:
            raise LongnetError(f"refusing to install: member {info.filename!r} {problem}; nothing was written",
                               zip_path)
    if not any(not i.is_dir() for i in infos):
        raise LongnetError("zip holds no files", zip_path)
    return infos


def install_model_zip(zip_path: str | Path, results: str | Path) -> list[Path]:
    """Extract a checked model zip into `results`; return the installed files' paths."""
    zip_path, root = Path(zip_path), Path(results)
    infos = plan_install(zip_path)
    files = [i for i in infos if not i.is_dir()]
    rel_files = [_relative(i) for i in files]
    _check_destination(root, rel_files, [_relative(i) for i in infos if i.is_dir()])
    existing = next(p for p in (root, *root.absolute().parents) if p.is_dir())
    needed, free = sum(i.file_size for i in files), shutil.disk_usage(existing).free
    if needed > free:
        raise LongnetError(f"zip unpacks to {needed / 2**20:.1f} MiB but only {free / 2**20:.1f} MiB are free", root)
    root.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(root, ".longnet_install.")
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for info, rel in zip(files, rel_files):
                    out = staging / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, EOFError, OSError) as e:  # corrupt member, CRC mismatch, name clash
            raise LongnetError(f"cannot extract zip ({e}); nothing was installed", zip_path) from None
        for rel in [_relative(i) for i in infos if i.is_dir()]:
            (root / rel).mkdir(parents=True, exist_ok=True)
        for rel in rel_files:  # same file system: each move is one rename
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, root / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [root / rel for rel in rel_files]
