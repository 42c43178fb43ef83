"""Preprocessed-case storage: blosc2 `.b2nd` arrays (data float32 C×Z×Y×X, seg int8/int16 1×Z×Y×X) + JSON properties.

Properties are JSON rather than pickle so that reading a preprocessed folder never executes code.
Every file is written to a temp name and renamed, so a killed run leaves either a whole case or nothing.
"""
from __future__ import annotations

import math
from pathlib import Path

import blosc2
import numpy as np

from longnet.io.case_names import case_file_name
from longnet.errors import DatasetError
from longnet.utils.files import atomic_path, load_json, save_json

blosc2.set_nthreads(1)


def _chunks_and_blocks(shape: tuple[int, ...], patch_size: tuple[int, ...] | None, itemsize: int):
    """Blocks about one L2-sized piece of a patch, chunks about one patch (≤ ~6 MiB), channel axis 1."""
    spatial = list(shape[1:])
    patch = list(patch_size) if patch_size is not None else [min(s, 64) for s in spatial]
    patch = [1] * (len(spatial) - len(patch)) + patch  # 2d configurations store whole volumes: one slice per patch
    patch = [min(p, s) for p, s in zip(patch, spatial)]
    block = [min(2 ** math.ceil(math.log2(max(p, 1))), s) for p, s in zip(patch, spatial)]
    while np.prod(block) * itemsize > 128 * 1024 and max(block) > 1:
        shrinkable = [i for i, b in enumerate(block) if b > 1]  # an axis already at 1 cannot give (2d slabs)
        ax = max(shrinkable, key=lambda i: block[i] / max(patch[i], 1))
        block[ax] //= 2
    chunk = list(block)
    while True:
        grown = False
        for ax in np.argsort([c / max(p, 1) for c, p in zip(chunk, patch)]):
            cand = list(chunk)
            cand[ax] = min(cand[ax] + block[ax], spatial[ax])
            if cand[ax] != chunk[ax] and cand[ax] <= 1.5 * patch[ax] and np.prod(cand) * itemsize <= 6 * 2 ** 20:
                chunk = cand
                grown = True
                break
        if not grown:
            break
    return (1, *chunk), (1, *block)


def save_array(arr: np.ndarray, dest: str | Path, patch_size=None, clevel: int = 5) -> None:
    arr = np.ascontiguousarray(arr)
    chunks, blocks = _chunks_and_blocks(arr.shape, patch_size, arr.itemsize)
    # LZ4 rather than nnU-Net's LZ4HC: 10x faster to write, as fast to read, ~7% larger files
    cparams = {"codec": blosc2.Codec.LZ4, "clevel": clevel, "nthreads": 1,
               "filters": [blosc2.Filter.SHUFFLE], "splitmode": blosc2.SplitMode.NEVER_SPLIT}
    with atomic_path(dest, suffix=".b2nd") as tmp:
        tmp.unlink()
        blosc2.asarray(arr, urlpath=str(tmp), chunks=chunks, blocks=blocks, cparams=cparams, mode="w")


def load_array(path: str | Path, mmap: bool = False) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatasetError("preprocessed array not found (run longnet_preprocess)", path)
    try:
        kwargs = {"mmap_mode": "r"} if mmap else {}
        return blosc2.open(str(path), mode="r", **kwargs)[...]
    except Exception as e:  # blosc2 raises several types for corrupt files
        raise DatasetError(f"corrupt preprocessed array ({e})", path) from None


def case_paths(folder: str | Path, case_id: str) -> dict[str, Path]:
    folder = Path(folder)  # names from longnet.io.case_names, which refuses ids whose files would collide
    return {role: folder / case_file_name(case_id, role) for role in ("data", "seg", "locations", "props")}


def save_case(folder: str | Path, case_id: str, data: np.ndarray, seg: np.ndarray, props: dict,
              patch_size=None) -> None:
    """Write data, seg, foreground locations, then properties last: the properties file marks a case complete.

    Foreground locations go to a plain npz (no pickle): as JSON they were most of the preprocessing time."""
    p = case_paths(folder, case_id)
    save_array(data.astype(np.float32, copy=False), p["data"], patch_size)
    save_array(seg, p["seg"], patch_size)
    props = dict(props)
    locations = props.pop("class_locations", {}) or {}
    with atomic_path(p["locations"], suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{f"k{k}": np.asarray(v, dtype=np.int32).reshape(-1, seg.ndim) for k, v in locations.items()})
    props["class_location_keys"] = list(locations.keys())
    save_json(props, p["props"], indent=None)


def load_class_locations(folder: str | Path, case_id: str, props: dict) -> dict[str, np.ndarray]:
    path = case_paths(folder, case_id)["locations"]
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[f"k{k}"] for k in props.get("class_location_keys", [])}
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"corrupt foreground-location file ({e})", path) from None


def case_is_complete(folder: str | Path, case_id: str) -> bool:
    p = case_paths(folder, case_id)
    return all(x.is_file() for x in p.values())


def load_case(folder: str | Path, case_id: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    p = case_paths(folder, case_id)
    props = load_json(p["props"])
    props["class_locations"] = load_class_locations(folder, case_id, props)
    return load_array(p["data"], mmap), load_array(p["seg"], mmap), props


def list_cases(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return sorted(p.name[:-5] for p in folder.glob("*.json") if not p.name.startswith(".")
                  and (folder / (p.name[:-5] + ".b2nd")).is_file())
