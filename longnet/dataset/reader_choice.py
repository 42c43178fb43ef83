"""Which reader/writer serves a dataset, a plans file or a folder of label maps (nnU-Net's rules).

A dataset's class: dataset.json `overwrite_image_reader_writer` if it names a known class (the string "None"
means unset; an unknown name warns once and falls back), else the first class in nnU-Net's order whose endings
contain the lower-cased `file_ending` and that reads the example image (first image of the first case). The
planner stores the name as `image_reader_writer`; every later step (preprocessing, prediction, export) uses the
class the plans name, so nnU-Net's own plans files and model folders work unchanged.

The dataset's dimensionality comes from the images themselves (nnU-Net v2 ignores v1's `tensorImageSize`).
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from longnet.dataset.readers import READER_WRITERS, READER_WRITERS_BY_NAME, ImageReaderWriter
from longnet.errors import DatasetError, LongnetError

DEFAULT_READER_WRITER = "SimpleITKIO"
_warned: set[str] = set()


def _known() -> str:
    return ", ".join(READER_WRITERS_BY_NAME)


def reader_writer_by_name(name: str, source: str | Path | None = None) -> ImageReaderWriter:
    """The reader/writer a plans file names (nnU-Net class names). Unknown names are a LongnetError."""
    cls = READER_WRITERS_BY_NAME.get(str(name))
    if cls is None:
        raise LongnetError(f"unknown image_reader_writer {name!r} (known: {_known()})", source)
    return cls()


def reader_writer_for_ending(file_ending: str, example_file: str | Path | None = None,
                             source: str | Path | None = None) -> ImageReaderWriter:
    """First class (nnU-Net's order) that supports `file_ending` and reads `example_file`.

    With one candidate, or when none reads the example, the first candidate is returned unread: its own read
    then reports the file's problem by name, where nnU-Net would only say that no reader fits."""
    candidates = [cls() for cls in READER_WRITERS if cls().supports(file_ending)]
    if not candidates:
        endings = sorted({e for cls in READER_WRITERS for e in cls.supported_file_endings})
        raise DatasetError(f"no image reader for file ending {file_ending!r} (supported: {', '.join(endings)})",
                           source)
    if len(candidates) > 1 and example_file is not None:
        for rw in candidates:
            if rw.can_read(example_file):
                return rw
    return candidates[0]


def reader_writer_for(dataset_json: dict, example_file: str | Path | None = None,
                      source: str | Path | None = None) -> ImageReaderWriter:
    """nnU-Net's choice for a dataset: `overwrite_image_reader_writer`, else by file ending and example image."""
    name = dataset_json.get("overwrite_image_reader_writer")
    if name is not None and name != "None":
        cls = READER_WRITERS_BY_NAME.get(str(name))
        if cls is not None:
            return cls()
        if name not in _warned:  # once per process: fingerprint, integrity check and planner all ask
            _warned.add(name)
            where = f"{source}: " if source else ""
            print(f"longnet: warning: {where}overwrite_image_reader_writer {name!r} is not a known reader/writer "
                  f"(known: {_known()}); choosing one from the file ending", file=sys.stderr)
    return reader_writer_for_ending(dataset_json["file_ending"], example_file, source)


def example_image(raw: Any) -> Path:
    """The first image of the first case (cases are sorted by id), nnU-Net's example file."""
    return raw.cases[next(iter(raw.cases))].images[0]


def reader_writer_for_dataset(raw: Any) -> ImageReaderWriter:
    """The reader/writer of a `RawDataset`."""
    return reader_writer_for(raw.dataset_json, example_image(raw), raw.dataset_json_path)


def reader_writer_for_plans(plans: Any) -> ImageReaderWriter:
    """The class a plans dict (or `Plans`) names; plans without the key are SimpleITKIO, nnU-Net's default."""
    d = plans.plans if hasattr(plans, "plans") else plans
    return reader_writer_by_name(d.get("image_reader_writer") or DEFAULT_READER_WRITER, getattr(plans, "source", None))


def reader_writer_for_file(path: str | Path, file_ending: str | None = None) -> ImageReaderWriter:
    """Any class that reads `path` (evaluation of loose label maps), by its ending and content."""
    path = Path(path)
    if file_ending is None:
        from longnet.dataset.readers import strip_ending

        file_ending = path.name[len(strip_ending(path.name, [".nii.gz", ".gipl.gz"])):]
    return reader_writer_for_ending(file_ending, path, path)


def dataset_dimension(rw: ImageReaderWriter, files: Sequence[str | Path], max_files: int = 25) -> int:
    """2 or 3: the majority over (up to `max_files` evenly spread) files' own dimension, ties going to 3D.

    A majority vote means a single odd file is reported as the odd one out instead of making every other file
    look wrong; unreadable files do not vote (their read reports them)."""
    files = list(files)
    sample = files[:: max(1, len(files) // max_files)]
    votes = Counter(d for d in (rw.image_dimension(f) for f in sample) if d in (2, 3))
    return 2 if votes.get(2, 0) > votes.get(3, 0) else 3


def raw_dataset_dimension(raw: Any, rw: ImageReaderWriter | None = None) -> int:
    """`dataset_dimension` over the first image of every case of a `RawDataset`."""
    rw = rw or reader_writer_for_dataset(raw)
    return dataset_dimension(rw, [c.images[0] for c in raw.cases.values()])


def check_channel_count(data_channels: int, files: Sequence[str | Path], num_channels: int) -> None:
    """One RGB file gives 3 channels, so the channel count is known only after reading: refuse a mismatch."""
    if data_channels != num_channels:
        names = ", ".join(Path(f).name for f in files)
        raise DatasetError(f"case has {data_channels} channel(s) in {len(files)} file(s) ({names}) but dataset.json "
                           f"'channel_names' lists {num_channels}", files[0])
