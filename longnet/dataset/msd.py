"""Convert a Medical Segmentation Decathlon task folder (TaskXX_Name) into an nnU-Net v2 / longnet raw dataset.

MSD stores one file per case (4D when multi-channel) without the _0000 suffix and a v1 dataset.json
(`modality`, `labels` as {"0": "background"}, `training`/`test` lists). The result is what nnU-Net v2's
converter writes: `imagesTr/{case}_{CCCC}.nii.gz`, `labelsTr/{case}.nii.gz`, `imagesTs/` and a v2 dataset.json.

Existing-target rule (same as nnU-Net): if any `DatasetNNN_*` folder with the target id already exists in the raw
root, conversion is refused; delete it or pick another id with `-overwrite_id`. The conversion is written into a
hidden temp folder next to the target and renamed into place only when complete, so an interrupted run never
leaves a half-converted dataset behind.
"""
from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from longnet.dataset.raw import validate_case_id
from longnet.errors import DatasetError, LongnetError
from longnet.utils.files import load_json, save_json, staging_folder

_TASK_RE = re.compile(r"^Task(\d+)_(.+)$")
_DATASET_RE = re.compile(r"^Dataset(\d{3})_")
_MSD_ENDINGS = (".nii.gz", ".nii")
OUT_ENDING = ".nii.gz"


def _list_cases(folder: Path) -> dict[str, Path]:
    """case id -> file for every NIfTI in `folder`, skipping hidden files (e.g. macOS '._' resource forks)."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        ending = next((e for e in _MSD_ENDINGS if p.name.endswith(e)), None)
        if ending is None:
            continue
        cid = validate_case_id(p.name[: -len(ending)], p)
        if cid in out:
            raise DatasetError(f"case {cid!r} exists both as {out[cid].name} and {p.name}", folder)
        out[cid] = p
    return out


def _read_info(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DatasetError("unreadable image file", path) from None
    return reader


def _read(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError:
        raise DatasetError("unreadable image file", path) from None


def _copy_or_rewrite(src: Path, dest: Path) -> None:
    """Copy a file already in the output format byte for byte; rewrite anything else as compressed NIfTI."""
    if src.name.endswith(OUT_ENDING):
        shutil.copyfile(src, dest)  # content only: MSD copies are often read-only, the output must not be
    else:
        sitk.WriteImage(_read(src), str(dest), useCompression=True)


def _convert_image(src: Path, dest_dir: Path, case_id: str, n_channels: int) -> None:
    """Write one MSD image as `case_CCCC.nii.gz` files: copied when 3D, split along the last axis when 4D."""
    info = _read_info(src)
    dim, comps = info.GetDimension(), info.GetNumberOfComponents()
    if comps != 1:
        raise DatasetError(f"vector image with {comps} components per voxel is not supported", src)
    if dim in (2, 3):
        if n_channels != 1:
            raise DatasetError(f"image is {dim}D (one channel) but dataset.json 'modality' lists {n_channels}", src)
        _copy_or_rewrite(src, dest_dir / f"{case_id}_0000{OUT_ENDING}")
        return
    if dim != 4:
        raise DatasetError(f"image is {dim}D; expected 3D or 4D (channels last)", src)
    n_t = info.GetSize()[3]
    if n_t != n_channels:
        raise DatasetError(f"4D image has {n_t} channels but dataset.json 'modality' lists {n_channels}", src)
    img = _read(src)
    arr = sitk.GetArrayFromImage(img)  # t, z, y, x
    spacing, origin = img.GetSpacing()[:3], img.GetOrigin()[:3]
    direction = np.asarray(img.GetDirection(), float).reshape(4, 4)[:3, :3].ravel().tolist()
    for c in range(n_t):
        out = sitk.GetImageFromArray(arr[c])
        out.SetSpacing(spacing)
        out.SetOrigin(origin)
        out.SetDirection(direction)
        sitk.WriteImage(out, str(dest_dir / f"{case_id}_{c:04d}{OUT_ENDING}"), useCompression=True)


def convert_dataset_json(msd: dict, num_training: int, source: str | Path = "dataset.json") -> dict:
    """MSD (v1) dataset.json -> nnU-Net v2: keep the descriptive keys, labels name->int, add channel_names/file_ending."""
    if not isinstance(msd, dict):
        raise DatasetError("must contain a JSON object", source)
    for key in ("modality", "labels"):
        if not isinstance(msd.get(key), dict) or not msd[key]:
            raise DatasetError(f"missing or empty key '{key}' (an MSD dataset.json maps index -> name)", source)
    labels: dict[str, int] = {}
    for idx, name in msd["labels"].items():
        if not str(idx).isdigit():
            raise DatasetError(f"label index {idx!r} is not a non-negative integer", source)
        if name in labels:
            raise DatasetError(f"label name {name!r} is used twice", source)
        labels[str(name)] = int(idx)
    modality = msd["modality"]
    if sorted(str(k) for k in modality) != sorted(str(i) for i in range(len(modality))):
        raise DatasetError(f"'modality' keys must be \"0\", \"1\", ... consecutively, got {list(modality)}", source)
    out: dict = {}
    for key, value in msd.items():
        if key in ("modality", "training", "test"):
            continue
        out[key] = labels if key == "labels" else value
    out["numTraining"] = num_training
    out["file_ending"] = OUT_ENDING
    out["channel_names"] = {str(k): modality[k] for k in sorted(modality, key=int)}
    return out


def target_name(source: Path, overwrite_id: int | None = None) -> str:
    """`TaskXX_Name` -> `DatasetXXX_Name` (the id replaced by `overwrite_id` if given)."""
    m = _TASK_RE.match(source.name)
    if not m:
        raise LongnetError("MSD folder name must look like TaskXX_Name (e.g. Task04_Hippocampus)", source)
    task_id = int(m.group(1)) if overwrite_id is None else overwrite_id
    if not 0 < task_id < 1000:
        raise LongnetError(f"dataset id must be between 1 and 999, got {task_id}")
    return f"Dataset{task_id:03d}_{m.group(2)}"


def _check_target_free(raw_root: Path, name: str) -> None:
    wanted = int(name[7:10])
    if not raw_root.is_dir():
        return
    taken = sorted(p.name for p in raw_root.iterdir() if (m := _DATASET_RE.match(p.name)) and int(m.group(1)) == wanted)
    if taken:
        raise LongnetError(f"dataset id {wanted} is already taken by {', '.join(taken)}; delete it or choose "
                           "another id with -overwrite_id", raw_root)


def convert_msd(source: str | Path, raw_root: str | Path | None = None, overwrite_id: int | None = None,
                num_processes: int = 2) -> Path:
    """Convert the MSD folder `source` into `raw_root/DatasetXXX_Name` and return that path.

    Work is spread over `num_processes` threads (file copies and SimpleITK IO release the GIL).
    """
    from longnet.paths import raw_root as default_raw_root

    source = Path(source)
    if not source.is_dir():
        raise LongnetError("MSD folder not found", source)
    name = target_name(source.resolve(), overwrite_id)
    root = Path(raw_root) if raw_root is not None else default_raw_root()
    msd_json = load_json(source / "dataset.json")
    images = _list_cases(source / "imagesTr")
    if not images:
        raise DatasetError("no .nii.gz images found", source / "imagesTr")
    labels = _list_cases(source / "labelsTr")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise DatasetError(f"label file has no image (expected imagesTr/{orphans[0]}.nii.gz)", labels[orphans[0]])
    tests = _list_cases(source / "imagesTs")
    dataset_json = convert_dataset_json(msd_json, len(images), source / "dataset.json")
    n_channels = len(dataset_json["channel_names"])
    _check_target_free(root, name)

    root.mkdir(parents=True, exist_ok=True)
    tmp = staging_folder(root, name)
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        jobs = [(_convert_image, (p, tmp / "imagesTr", c, n_channels)) for c, p in images.items()]
        jobs += [(_convert_image, (p, tmp / "imagesTs", c, n_channels)) for c, p in tests.items()]
        jobs += [(_copy_or_rewrite, (p, tmp / "labelsTr" / f"{c}{OUT_ENDING}")) for c, p in labels.items()]
        if num_processes <= 1:
            for fn, args in jobs:
                fn(*args)
        else:
            ex = ThreadPoolExecutor(max_workers=num_processes)
            try:
                for f in [ex.submit(fn, *args) for fn, args in jobs]:
                    f.result()  # re-raises the first failure
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
        save_json(dataset_json, tmp / "dataset.json", sort_keys=False)
        dest = root / name
        _check_target_free(root, name)  # someone may have created it meanwhile
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
