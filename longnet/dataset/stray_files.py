"""Files in imagesTr/ or labelsTr/ that the dataset's `file_ending` does not match.

nnU-Net ignores them silently, so a label saved as `.nii` in a `.nii.gz` dataset leaves its case unlabelled and an
image saved so drops the case: both go unnoticed until the results look wrong. Here each one is named instead.
Hidden files, folders, OS clutter and the companion files of a format (MetaImage `.raw`, TIFF spacing sidecars)
are not images and pass.
"""
from __future__ import annotations

from pathlib import Path

from longnet.errors import DatasetError

_OS_CLUTTER = {"thumbs.db", "desktop.ini", "icon\r"}
# file_ending -> endings of files that belong to an image of that format
_COMPANIONS: dict[str, tuple[str, ...]] = {
    ".mhd": (".raw", ".zraw", ".raw.gz"),
    ".nhdr": (".raw", ".raw.gz", ".raw.bz2"),
    ".hdr": (".img", ".img.gz"),
    ".tif": (".json",),
    ".tiff": (".json",),
}


def _companion(name: str, file_ending: str) -> bool:
    return any(name.lower().endswith(c) for c in _COMPANIONS.get(file_ending.lower(), ()))


def stray_files(folder: Path, file_ending: str) -> list[Path]:
    """Plain files in `folder` that are neither `*{file_ending}` nor hidden, clutter or a format companion."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        name = p.name
        if name.startswith(".") or name.lower() in _OS_CLUTTER or not p.is_file():
            continue
        if name.endswith(file_ending) or _companion(name, file_ending):
            continue
        out.append(p)
    return out


def refuse_stray_files(folder: Path, file_ending: str, kind: str) -> None:
    """Raise DatasetError naming the first file whose ending differs from dataset.json's `file_ending`.

    `kind` ("image" or "label") says what the ignored file would have cost."""
    stray = stray_files(folder, file_ending)
    if not stray:
        return
    effect = "its case would be treated as unlabelled" if kind == "label" else "it would be ignored"
    more = f" ({len(stray) - 1} more such file(s) in {folder.name}/)" if len(stray) > 1 else ""
    raise DatasetError(f"file ending differs from dataset.json 'file_ending' {file_ending!r}: {effect}; convert or "
                       f"rename it, or move it out of {folder.name}/{more}", stray[0])
