"""Apply postprocessing steps to every label map of a folder (nnU-Net's apply_postprocessing)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from longnet.dataset.raw import validate_case_id
from longnet.errors import LongnetError
from longnet.postprocessing.components import remove_all_but_largest_component
from longnet.postprocessing.decisions import Step
from longnet.utils.parallel import map_processes


def apply_steps(seg: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    """Keep-largest-component for each step, in order (lists and tuples are unions of labels)."""
    for step in steps:
        seg = remove_all_but_largest_component(seg, step)
    return seg


def _process_file(job: tuple) -> str:
    from longnet.dataset.reader_choice import reader_writer_by_name

    src, dest, steps, rw_name = job
    rw = reader_writer_by_name(rw_name)
    seg, props = rw.read_seg(src)
    out = apply_steps(seg[0], steps)
    rw.write_seg(out, dest, props)
    return dest


def label_maps(folder: str | Path, file_ending: str) -> list[str]:
    """Sorted names of the `*{file_ending}` files of a folder (case ids checked: they become file names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LongnetError("folder not found", folder)
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith("."))
    for n in names:
        validate_case_id(n[: -len(file_ending)], folder / n)
    return names


def apply_to_folder(input_folder: str | Path, output_folder: str | Path, steps: Sequence[Step], file_ending: str,
                    reader_writer: str, num_processes: int = 1) -> list[str]:
    """Postprocess every `*{file_ending}` of `input_folder` into `output_folder` under the same names (nothing
    else is copied); each file is written atomically."""
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    names = label_maps(input_folder, file_ending)
    if not names:
        raise LongnetError(f"no label maps ending in {file_ending}", input_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(input_folder / n), str(output_folder / n), list(steps), reader_writer) for n in names]
    map_processes(_process_file, jobs, num_processes)
    return names
