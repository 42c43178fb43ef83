"""Probabilities and geometry of one case in a folder written with `--npz` / `--save_probabilities`.

`{case}.npz` holds `probabilities` (float32, heads × original z, y, x). The geometry needed to write a label
map comes from longnet's `{case}.json`, else from the label map `{case}{file_ending}` next to it (nnU-Net's
folders have a `{case}.pkl` instead, which is never unpickled here).
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from longnet.dataset.raw import validate_case_id
from longnet.dataset.readers import ImageReaderWriter
from longnet.errors import LongnetError
from longnet.utils.files import _json_default, atomic_path, load_json, save_json


def npz_cases(folder: str | Path) -> list[str]:
    """Sorted ids of the cases with a `{case}.npz` in `folder` (ids checked: they become file names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LongnetError("folder not found", folder)
    return sorted(validate_case_id(p.name[:-4], p) for p in folder.iterdir()
                  if p.name.endswith(".npz") and not p.name.startswith("."))


def load_probabilities(npz: str | Path) -> np.ndarray:
    """The `probabilities` array of a `{case}.npz` (no pickled objects are loaded)."""
    npz = Path(npz)
    try:
        with np.load(npz, allow_pickle=False) as f:
            if "probabilities" not in f.files:
                raise LongnetError(f"no 'probabilities' array (found: {', '.join(f.files) or 'nothing'})", npz)
            probs = np.asarray(f["probabilities"], dtype=np.float32)
    except (OSError, ValueError) as e:
        raise LongnetError(f"unreadable probabilities file ({e})", npz) from None
    if probs.ndim != 4:
        raise LongnetError(f"probabilities must be heads × z × y × x, got shape {probs.shape}", npz)
    return probs


def _json_properties(props_file: Path) -> dict:
    props = load_json(props_file)
    if not isinstance(props, dict) or "spacing" not in props:
        raise LongnetError("case properties need at least 'spacing' (and 'sitk_stuff' for SimpleITK files)",
                           props_file)
    return props


def load_case(folder: str | Path, case: str, file_ending: str, reader: ImageReaderWriter) -> tuple[np.ndarray, dict]:
    """(probabilities, properties) of one case. Properties: `{case}.json` if present, else the geometry of the
    label map `{case}{file_ending}` next to the .npz, which must then lie on the probabilities' grid."""
    folder = Path(folder)
    probs = load_probabilities(folder / f"{case}.npz")
    props_file = folder / f"{case}.json"
    if props_file.is_file():
        return probs, _json_properties(props_file)
    label_map = folder / f"{case}{file_ending}"
    if not label_map.is_file():
        raise LongnetError(f"no geometry for case {case}: neither {case}.json nor the label map "
                           f"{case}{file_ending} is next to {case}.npz ({case}.pkl is never unpickled)", folder)
    seg, props = reader.read_seg(label_map)
    if tuple(seg.shape[1:]) != tuple(probs.shape[1:]):
        raise LongnetError(f"probabilities grid {tuple(probs.shape[1:])} differs from the label map's "
                           f"{tuple(seg.shape[1:])}", folder / f"{case}.npz")
    return probs, props


def plain(props: dict) -> dict:
    """Properties as plain JSON types (lists, numbers, strings): safe to write as JSON and as a plain pickle."""
    return json.loads(json.dumps(props, default=_json_default))


def save_case_probabilities(probs: np.ndarray, props: dict, folder: str | Path, case: str,
                            pkl_source: str | Path | None = None) -> None:
    """Write `{case}.npz`, `{case}.json` and, for nnU-Net's tools, `{case}.pkl`: a byte copy of `pkl_source`
    when given (never unpickled), else the properties pickled as plain data. Each file is written atomically."""
    folder = Path(folder)
    with atomic_path(folder / f"{case}.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=np.asarray(probs, dtype=np.float32))
    props = plain({k: v for k, v in props.items() if k != "class_locations"})
    save_json(props, folder / f"{case}.json")
    with atomic_path(folder / f"{case}.pkl") as tmp:
        if pkl_source is not None and Path(pkl_source).is_file():
            shutil.copyfile(pkl_source, tmp)
        else:
            with open(tmp, "wb") as f:
                pickle.dump(props, f)
