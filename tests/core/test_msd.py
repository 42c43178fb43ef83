"""MSD -> raw dataset conversion (`longnet_convert_msd`): real Task04 against nnU-Net's output, synthetic 4D data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from raw_datasets import write_image
from longnet.cli.convert import main
from longnet.dataset.integrity import check_dataset

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "nnunetv2-2.8.1" / "Dataset004_Hippocampus"


def _same_image(a: Path, b: Path) -> None:
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert ia.GetPixelID() == ib.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib))
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(ia, get)() == getattr(ib, get)(), get


def test_convert_task04_matches_nnunet(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGNET_RAW", str(tmp_path))
    src = shared_data / "Task04_Hippocampus"
    assert main(["-i", str(src), "-np", "2"]) == 0
    out = tmp_path / "Dataset004_Hippocampus"
    dj = json.loads((out / "dataset.json").read_text())
    if REFERENCE.is_dir():
        ref = json.loads((REFERENCE / "dataset.json").read_text())
        assert list(dj) == list(ref)
        for key in ref:
            assert dj[key] == ref[key], key
    assert dj["channel_names"] == {"0": "MRI"} and dj["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert len(list((out / "imagesTr").iterdir())) == 260 == len(list((out / "labelsTr").iterdir()))
    for case in ("hippocampus_001", "hippocampus_394"):
        _same_image(src / "imagesTr" / f"{case}.nii.gz", out / "imagesTr" / f"{case}_0000.nii.gz")
        _same_image(src / "labelsTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset004_Hippocampus"]  # no temp folder left
    # a second run must refuse, not clobber
    assert main(["-i", str(src)]) == 1


def _make_msd(root: Path, n_channels: int = 2, n_cases: int = 2, bad_case: int | None = None) -> Path:
    task = root / "Task17_Tiny"
    for i in range(n_cases):
        n = n_channels + 1 if i == bad_case else n_channels
        arr = np.arange(n * 4 * 5 * 6, dtype=np.float32).reshape(n, 4, 5, 6)  # t, z, y, x
        img = sitk.GetImageFromArray(arr, isVector=False)
        img.SetSpacing((0.5, 0.6, 0.7, 1.0))
        img.SetOrigin((1.0, 2.0, 3.0, 0.0))
        d = np.eye(4)
        d[:3, :3] = [[0, 1, 0], [1, 0, 0], [0, 0, -1]]
        img.SetDirection(d.ravel().tolist())
        (task / "imagesTr").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(task / "imagesTr" / f"tiny_{i}.nii.gz"))
        write_image(task / "labelsTr" / f"tiny_{i}.nii.gz", (arr[0] % 2).astype(np.uint8),
                    spacing=(0.5, 0.6, 0.7), origin=(1.0, 2.0, 3.0), direction=d[:3, :3].ravel())
    (task / "imagesTr" / "._tiny_0.nii.gz").write_bytes(b"macOS resource fork")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "odd"},
        "numTraining": n_cases, "training": [], "test": []}))
    return task


def test_convert_4d_splits_channels_with_geometry(tmp_path, monkeypatch):
    task = _make_msd(tmp_path / "src")
    raw = tmp_path / "raw"
    monkeypatch.setenv("LONGNET_RAW", str(raw))
    assert main(["-i", str(task), "-overwrite_id", "117", "-np", "2"]) == 0
    out = raw / "Dataset117_Tiny"
    dj = json.loads((out / "dataset.json").read_text())
    assert dj == {"name": "Tiny", "labels": {"background": 0, "odd": 1}, "numTraining": 2, "file_ending": ".nii.gz",
                  "channel_names": {"0": "FLAIR", "1": "T1w"}}
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(task / "imagesTr" / "tiny_1.nii.gz")))
    for c in range(2):
        img = sitk.ReadImage(str(out / "imagesTr" / f"tiny_1_{c:04d}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), src[c])
        assert img.GetSpacing() == pytest.approx((0.5, 0.6, 0.7)) and img.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))
        assert img.GetDirection() == (0, 1, 0, 1, 0, 0, 0, 0, -1)
    check_dataset(out)  # channels and label agree


def test_convert_failure_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    task = _make_msd(tmp_path / "src", n_cases=3, bad_case=1)
    raw = tmp_path / "raw"
    monkeypatch.setenv("LONGNET_RAW", str(raw))
    assert main(["-i", str(task)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("longnet: error: ") and "tiny_1.nii.gz" in err and "3 channels" in err
    assert list(raw.iterdir()) == []


def test_convert_refuses_taken_id_and_bad_names(tmp_path, monkeypatch, capsys):
    task = _make_msd(tmp_path / "src")
    raw = tmp_path / "raw"
    (raw / "Dataset017_Other").mkdir(parents=True)
    monkeypatch.setenv("LONGNET_RAW", str(raw))
    assert main(["-i", str(task)]) == 1
    assert "dataset id 17 is already taken by Dataset017_Other" in capsys.readouterr().err
    renamed = task.rename(tmp_path / "src" / "Tiny")
    assert main(["-i", str(renamed), "-overwrite_id", "18"]) == 1
    assert "TaskXX_Name" in capsys.readouterr().err
    assert main(["-i", str(tmp_path / "missing" / "Task01_X")]) == 1
