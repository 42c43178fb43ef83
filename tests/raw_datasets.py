"""Tiny raw datasets written in the test (nnU-Net layout), image writing and longnet's folder variables: helpers
shared by the tests (fixtures wrap them in conftest.py)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TCIA = SHARED_DATA / "tcia_brain_tumor_progression"

DEFAULT_SHAPE = (8, 12, 10)  # x, y, z (SimpleITK order); arrays are z, y, x
DEFAULT_LABELS = {"background": 0, "lesion": 1}


def write_image(path: str | Path, arr: np.ndarray, spacing: Sequence[float] | None = None,
                origin: Sequence[float] | None = None, direction: Sequence[float] | None = None) -> Path:
    """Write a numpy array (z, y, x order) as an image; geometry defaults to unit spacing, zero origin, identity."""
    img = sitk.GetImageFromArray(np.asarray(arr))
    dim = img.GetDimension()
    img.SetSpacing([float(s) for s in (spacing if spacing is not None else [1.0] * dim)])
    img.SetOrigin([float(s) for s in (origin if origin is not None else [0.0] * dim)])
    if direction is not None:
        img.SetDirection([float(s) for s in direction])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def make_raw_dataset(root: str | Path, n_cases: int = 4, n_channels: int = 1,
                     labels: Mapping[str, int | list[int]] | None = None,
                     subjects: Mapping[str, list[str]] | None = None,
                     visits: Mapping[str, float | Mapping[str, object]] | None = None, *,
                     name: str = "Dataset999_Test", case_ids: Sequence[str] | None = None,
                     unlabelled: Iterable[str] = (), shape: Sequence[int] = DEFAULT_SHAPE,
                     spacing: Sequence[float] | None = None, file_ending: str = ".nii.gz",
                     num_training: int | None = None, extra_json: Mapping | None = None, seed: int = 0) -> Path:
    """Write a tiny raw dataset `root/name` and return its folder.

    - Cases: `case_ids`, else the cases listed in `subjects` (in order), else `case_000 ... case_{n_cases-1}`.
    - Images: `{case}_{CCCC}{file_ending}` per channel, float32 noise plus a bright box where the label is, `shape`
      given in x, y, z (SimpleITK order; 2 entries make a 2D dataset), `spacing` defaults to 1.
    - Labels: one box per foreground label value (every value in `labels` appears); none for cases in `unlabelled`.
    - `subjects` ({subject: [case, ...]}) -> patientsTr.json; `visits` ({case: days} or {case: {"days": d, col: v}})
      -> visitsTr.csv with columns case, days, then every other key seen.
    - dataset.json: channel_names ch0.., `labels` (default background/lesion), numTraining (= number of cases unless
      `num_training`), file_ending, plus `extra_json`.
    """
    labels = dict(labels or DEFAULT_LABELS)
    folder = Path(root) / name
    if case_ids is None:
        case_ids = [c for cs in subjects.values() for c in cs] if subjects else [f"case_{i:03d}" for i in range(n_cases)]
    case_ids = list(case_ids)
    unlabelled = set(unlabelled)
    rng = np.random.default_rng(seed)
    zyx = tuple(shape)[::-1]
    values = sorted({v for lv in labels.values() for v in (lv if isinstance(lv, list) else [lv])} - {0})
    for i, cid in enumerate(case_ids):
        seg = np.zeros(zyx, np.uint8)
        for k, v in enumerate(values):  # one box per label, shifted per case so cases differ
            lo = [(k * 2 + i) % max(1, s - 3) for s in zyx]
            seg[tuple(slice(a, a + max(1, s // 3)) for a, s in zip(lo, zyx))] = v
        for c in range(n_channels):
            img = rng.normal(100.0 * (c + 1), 10.0, zyx).astype(np.float32) + 50.0 * (seg > 0)
            write_image(folder / "imagesTr" / f"{cid}_{c:04d}{file_ending}", img, spacing)
        if cid not in unlabelled:
            write_image(folder / "labelsTr" / f"{cid}{file_ending}", seg, spacing)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    dj = {
        "channel_names": {str(c): f"ch{c}" for c in range(n_channels)},
        "labels": labels,
        "numTraining": len(case_ids) if num_training is None else num_training,
        "file_ending": file_ending,
    }
    dj.update(extra_json or {})
    (folder / "dataset.json").write_text(json.dumps(dj, indent=4))
    if subjects is not None:
        (folder / "patientsTr.json").write_text(json.dumps(dict(subjects), indent=4))
    if visits is not None:
        rows = [{"case": c, **(dict(v) if isinstance(v, Mapping) else {"days": v})} for c, v in visits.items()]
        cols = ["case", "days"] + sorted({k for r in rows for k in r} - {"case", "days"})
        with open(folder / "visitsTr.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    return folder


def tcia_raw_dataset(root: Path, folder_name: str, subjects: Iterable[str] | None = None,
                     dataset_json: Path | None = None, with_patients: bool = True) -> Path:
    """The shared TCIA brain-tumour-progression visits as raw dataset `root/folder_name`: T1 + tumour mask per visit,
    `patientsTr.json` and `visitsTr.csv` (days from the manifest) unless `with_patients` is False. `subjects` keeps
    only those patients; `dataset_json` is copied (e.g. nnU-Net's reference), else a minimal one is written."""
    keep = None if subjects is None else set(subjects)
    folder = root / folder_name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    patients: dict[str, list[str]] = {}
    rows = ["case,days"]
    for entry in json.loads((TCIA / "manifest.json").read_text()):
        subj, tp = entry["subject"], entry["timepoint"]
        if keep is not None and subj not in keep:
            continue
        case = f"{subj}_tp{tp}"
        shutil.copy(TCIA / subj / f"tp{tp}" / f"{case}_T1.nii.gz", folder / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(TCIA / subj / f"tp{tp}" / f"{case}_seg.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
        patients.setdefault(subj, []).append(case)
        rows.append(f"{case},{entry['days_from_tp1']}")
    if dataset_json is not None:
        shutil.copy(dataset_json, folder / "dataset.json")
    else:
        (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "file_ending": ".nii.gz",
                                                         "labels": {"background": 0, "tumour": 1},
                                                         "numTraining": len(rows) - 1}))
    if with_patients:
        (folder / "patientsTr.json").write_text(json.dumps(patients))
        (folder / "visitsTr.csv").write_text("\n".join(rows) + "\n")
    return folder


def longnet_roots(root: Path, monkeypatch) -> dict[str, Path]:
    """root/{raw,pre,res} created and set as LONGNET_RAW / LONGNET_PREPROCESSED / LONGNET_RESULTS."""
    env = {"LONGNET_RAW": root / "raw", "LONGNET_PREPROCESSED": root / "pre", "LONGNET_RESULTS": root / "res"}
    for key, folder in env.items():
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(key, str(folder))
    return env
