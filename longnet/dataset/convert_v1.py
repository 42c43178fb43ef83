"""Convert an nnU-Net v1 raw task folder (TaskXXX_Name) into a v2 / longnet raw dataset.

v1 images already use the `{case}_{CCCC}.nii.gz` naming, so the image folders are copied as they are; only
dataset.json changes (the same v1 -> v2 rewrite MSD conversion does, minus the keys v2 has no use for). The
dataset is assembled in a hidden folder next to the target and renamed into place when complete.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from longnet.dataset.msd import OUT_ENDING, _check_target_free, convert_dataset_json
from longnet.errors import DatasetError, LongnetError
from longnet.utils.files import load_json, save_json, staging_folder

REQUIRED_FOLDERS = ("imagesTr", "labelsTr")
OPTIONAL_FOLDERS = ("imagesTs", "labelsTs", "imagesVal", "labelsVal")
_DROPPED_KEYS = ("tensorImageSize", "numTest")
_NAME_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def v1_to_v2_dataset_json(v1: dict, source: str | Path = "dataset.json") -> dict:
    """v1 keys in their order without `training`, `test`, `tensorImageSize`, `numTest`, `modality`; labels name ->
    int; then `channel_names` (from `modality`) and `file_ending` .nii.gz (kept in place when v1 had one)."""
    num_training = v1.get("numTraining") if isinstance(v1, dict) else None
    if num_training is None and isinstance(v1, dict):
        num_training = len(v1.get("training") or [])
    converted = convert_dataset_json(v1, num_training, source)
    out = {k: converted[k] for k in v1 if k in converted and k not in _DROPPED_KEYS}
    out["channel_names"] = converted["channel_names"]
    out["file_ending"] = OUT_ENDING
    if "numTraining" not in out:
        out["numTraining"] = num_training
    return out


def check_dataset_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LongnetError(f"output dataset name {name!r} must look like DatasetXXX_Name (three digits, then a name "
                           "of letters, digits, '_', '-', '.')")
    return name


def convert_old_dataset(source: str | Path, name: str, raw_root: str | Path | None = None) -> Path:
    """Copy the v1 task `source` to `raw_root/name` with a v2 dataset.json; refuse if the name or its id is taken."""
    from longnet.paths import raw_root as default_raw_root

    source = Path(source)
    check_dataset_name(name)
    if not source.is_dir():
        raise LongnetError("nnU-Net v1 task folder not found", source)
    for sub in REQUIRED_FOLDERS:
        if not (source / sub).is_dir():
            raise DatasetError(f"missing folder {sub}/ (expected an nnU-Net v1 raw task folder)", source / sub)
    dataset_json = v1_to_v2_dataset_json(load_json(source / "dataset.json"), source / "dataset.json")
    root = Path(raw_root) if raw_root is not None else default_raw_root()
    if (root / name).exists():
        raise LongnetError("target dataset already exists; delete it or choose another name", root / name)
    _check_target_free(root, name)
    root.mkdir(parents=True, exist_ok=True)
    tmp = staging_folder(root, name)
    try:
        for sub in REQUIRED_FOLDERS + OPTIONAL_FOLDERS:
            if (source / sub).is_dir():
                shutil.copytree(source / sub, tmp / sub, copy_function=shutil.copyfile)
        save_json(dataset_json, tmp / "dataset.json", sort_keys=False)
        if (root / name).exists():
            raise LongnetError("target dataset appeared while converting; delete it or choose another name",
                               root / name)
        os.rename(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / name
