"""Postprocessing decisions on disk.

`postprocessing.json` (nnU-Net's keys: `input_folder`, `postprocessed`, `postprocessing_fns`,
`postprocessing_kwargs`) is what longnet reads. `postprocessing.pkl` is written in nnU-Net's layout, a pickled
`(functions, kwargs)` pair, but as plain data: nnU-Net stores function objects there, which cannot be pickled
without importing nnU-Net, so the functions are stored by name. nnU-Net's tools can load the file and read the
decisions, but `nnUNetv2_apply_postprocessing` cannot run it (it calls each entry); use
`longnet_apply_postprocessing`. longnet itself never unpickles: given a `.pkl`, it reads the
`postprocessing.json` next to it.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Union

from longnet.errors import LongnetError
from longnet.utils.files import atomic_path, load_json, save_json

FUNCTION_NAME = "remove_all_but_largest_component_from_segmentation"
JSON_NAME, PKL_NAME = "postprocessing.json", "postprocessing.pkl"

#: one step: a label (int), a region (tuple) or, for the joint foreground, a list of labels
Step = Union[int, tuple, list]


def _results(summary: dict) -> dict:
    return {"foreground_mean": summary.get("foreground_mean", {}), "mean": summary.get("mean", {})}


def save_decisions(folder: str | Path, steps: list[Step], baseline: dict, postprocessed: dict) -> None:
    """Write `postprocessing.json` and `postprocessing.pkl` into `folder` (each atomically)."""
    folder = Path(folder)
    kwargs = [{"labels_or_regions": s} for s in steps]
    save_json({"input_folder": _results(baseline), "postprocessed": _results(postprocessed),
               "postprocessing_fns": [FUNCTION_NAME] * len(steps),
               "postprocessing_kwargs": [{"labels_or_regions": _as_json(s)} for s in steps]},
              folder / JSON_NAME, sort_keys=True)
    with atomic_path(folder / PKL_NAME) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(([FUNCTION_NAME] * len(steps), kwargs), f)


def _as_json(step: Step):
    if isinstance(step, (list, tuple)):
        return [int(x) if not isinstance(x, (list, tuple)) else [int(y) for y in x] for x in step]
    return int(step)


def load_decisions(path: str | Path) -> list[Step]:
    """The steps of a `postprocessing.json`, in order (lists stand for unions, as in nnU-Net's function)."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("postprocessing_fns"), list) \
            or not isinstance(data.get("postprocessing_kwargs"), list):
        raise LongnetError("not a postprocessing file (needs 'postprocessing_fns' and 'postprocessing_kwargs' lists)",
                           path)
    fns, kwargs = data["postprocessing_fns"], data["postprocessing_kwargs"]
    if len(fns) != len(kwargs):
        raise LongnetError(f"{len(fns)} postprocessing_fns but {len(kwargs)} postprocessing_kwargs", path)
    steps: list[Step] = []
    for fn, kw in zip(fns, kwargs):
        if fn != FUNCTION_NAME:
            raise LongnetError(f"unknown postprocessing function {fn!r} (known: {FUNCTION_NAME})", path)
        value = kw.get("labels_or_regions") if isinstance(kw, dict) else None
        if not _valid_step(value):
            raise LongnetError(f"'labels_or_regions' must be a label or a list of labels/regions, got {value!r}",
                               path)
        steps.append(value)
    return steps


def _valid_step(value) -> bool:
    def is_label(x):
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0
    if is_label(value):
        return True
    return isinstance(value, list) and len(value) > 0 and all(
        is_label(x) or (isinstance(x, list) and x and all(is_label(y) for y in x)) for x in value)


def resolve_decisions_file(pp_pkl_file: str | None, pp_file: str | None) -> Path:
    """`-pp_file` (a postprocessing.json) as given; `-pp_pkl_file` only through the postprocessing.json beside
    it, since a pickle is never loaded."""
    if pp_file is not None:
        path = Path(pp_file)
        if not path.is_file():
            raise LongnetError("postprocessing file not found", path)
        return path
    pkl = Path(pp_pkl_file)
    if pkl.suffix != ".pkl":
        raise LongnetError("-pp_pkl_file must name a .pkl file (use -pp_file for postprocessing.json)", pkl)
    beside = pkl.with_name(JSON_NAME)
    if not beside.is_file():
        raise LongnetError(f"pickles are never loaded: -pp_pkl_file is accepted only with the {JSON_NAME} written "
                           f"next to it (missing: {beside}); pass that JSON with -pp_file", pkl)
    return beside
