"""Overlay PNGs, moving plans between datasets and converting nnU-Net v1 raw datasets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.cli.dataset_tools import main_convert_old, main_move_plans, main_plot_overlay_pngs
from longnet.dataset.overlay_pngs import overlay_rgb, select_slice


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longnet: error: ")
    return err[0]


# -- overlay PNGs -------------------------------------------------------------------------------------------------

def _two_label_seg() -> np.ndarray:
    """Label 1: 9 voxels in slice 0, 1 in slice 1; label 2: 1 voxel in slice 1.

    Normalising each label by its own total would pick slice 1 (mean 0.55 vs 0.45); normalising by the running
    total of the count table, as nnU-Net does, gives label 2 only 1/(1+1) in slice 1 and picks slice 0."""
    seg = np.zeros((3, 4, 5), np.int16)
    seg[0, :3, :3] = 1
    seg[1, 0, 0] = 1
    seg[1, 3, 4] = 2
    return seg


def test_select_slice_uses_running_total_normalisation():
    assert select_slice(_two_label_seg()) == 0
    seg = np.zeros((4, 3, 3), np.int16)
    seg[2, :2, :2] = 3
    assert select_slice(seg) == 2
    assert select_slice(np.zeros((4, 3, 3), np.int16)) == 0


def test_overlay_rgb_scaling_and_colours():
    image = np.array([[0.0, 10.0], [20.0, 40.0]], np.float32)
    seg = np.array([[0, 1], [0, 0]], np.int16)
    rgb = overlay_rgb(image, seg, intensity=0.6)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    # background (rank 0) adds black; label 1 (rank 1) adds 0.6 * (67, 99, 216) to 63.75 grey; brightest -> 255
    grey = image / 40 * 255
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    expected[0, 1] += 0.6 * np.array([67, 99, 216])
    expected = (expected / expected.max() * 255).astype(np.uint8)
    assert np.array_equal(rgb, expected)


def _read_png_rgb(path: Path) -> np.ndarray:
    import matplotlib.pyplot as plt

    return np.round(plt.imread(path)[..., :3] * 255).astype(np.uint8)


def test_plot_overlay_pngs_from_raw_picks_the_slice(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw" / "Dataset007_Ov"
    rng = np.random.default_rng(0)
    images = {}
    for cid, seg in (("a", _two_label_seg()), ("b", np.flip(_two_label_seg(), 0).copy())):
        img = rng.normal(100, 20, seg.shape).astype(np.float32)
        images[cid] = (img, seg)
        write_image(raw / "imagesTr" / f"{cid}_0000.nii.gz", img)
        write_image(raw / "labelsTr" / f"{cid}.nii.gz", seg.astype(np.uint8))
    write_image(raw / "imagesTr" / "c_0000.nii.gz", np.ones((3, 4, 5), np.float32))  # unlabelled: skipped
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1,
                                                  "b": 2}, "numTraining": 3, "file_ending": ".nii.gz"}))
    monkeypatch.setenv("LONGNET_RAW", str(tmp_path / "raw"))
    out = tmp_path / "png"
    assert main_plot_overlay_pngs(["-d", "7", "-o", str(out), "--use_raw", "-np", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    for cid, z in (("a", 0), ("b", 2)):
        img, seg = images[cid]
        got = _read_png_rgb(out / f"{cid}.png")
        assert np.array_equal(got, overlay_rgb(img[z], seg[z]))
        assert not np.array_equal(got, overlay_rgb(img[1], seg[1]))
    assert main_plot_overlay_pngs(["-d", "7", "-o", str(out), "--use_raw", "-channel_idx", "1", "-np", "1"]) == 1
    assert "-channel_idx 1 is out of range" in _one_error_line(capsys)


def test_plot_overlay_pngs_from_preprocessed(tmp_path, monkeypatch):
    from longnet.io.storage import save_array

    pre = tmp_path / "pre" / "Dataset008_Pp"
    plans = {"dataset_name": "Dataset008_Pp", "plans_name": "nnUNetPlans",
             "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d"},
                                "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}}}
    (pre).mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    seg = _two_label_seg()
    seg[2] = -1  # outside the crop: drawn as background
    data = np.stack([np.arange(seg.size, dtype=np.float32).reshape(seg.shape), np.ones(seg.shape, np.float32)])
    save_array(data, pre / "nnUNetPlans_3d_fullres" / "x.b2nd")
    save_array(seg[None], pre / "nnUNetPlans_3d_fullres" / "x_seg.b2nd")
    monkeypatch.setenv("LONGNET_PREPROCESSED", str(pre.parent))
    out = tmp_path / "png"
    assert main_plot_overlay_pngs(["-d", "8", "-o", str(out), "-np", "1"]) == 0
    assert [p.name for p in out.iterdir()] == ["x.png"]
    assert np.array_equal(_read_png_rgb(out / "x.png"), overlay_rgb(data[0, 0], np.maximum(seg[0], 0)))


def test_plot_overlay_pngs_missing_preprocessed_data(tmp_path, monkeypatch, capsys):
    pre = tmp_path / "pre" / "Dataset008_Pp"
    pre.mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {"data_identifier": "nnUNetPlans_2d"}}}))
    monkeypatch.setenv("LONGNET_PREPROCESSED", str(pre.parent))
    assert main_plot_overlay_pngs(["-d", "8", "-o", str(tmp_path / "png"), "-np", "1"]) == 1
    assert "no preprocessed data for configuration 2d" in _one_error_line(capsys)
    assert not (tmp_path / "png").exists()


# -- move plans ---------------------------------------------------------------------------------------------------

def _plans_setup(tmp_path, monkeypatch, target_ending=".nii.gz", target_pre=True):
    pre, raw = tmp_path / "pre", tmp_path / "raw"
    plans = {"dataset_name": "Dataset001_Src", "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": [1.0, 2.0, 3.0], "image_reader_writer": "SimpleITKIO",
             "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "batch_size": 12},
                                "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [8, 8, 8]},
                                "3d_lowres": {"data_identifier": "lowres_custom"},
                                "3d_cascade_fullres": {"inherits_from": "3d_fullres"}},
             "experiment_planner_used": "ExperimentPlanner"}
    (pre / "Dataset001_Src").mkdir(parents=True)
    (pre / "Dataset001_Src" / "nnUNetPlans.json").write_text(json.dumps(plans))
    if target_pre:
        (pre / "Dataset002_Tgt").mkdir(parents=True)
    write_image(raw / "Dataset002_Tgt" / "imagesTr" / f"t1_0000{target_ending}", np.zeros((2, 3, 4), np.float32))
    (raw / "Dataset002_Tgt" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}, "numTraining": 1,
         "file_ending": target_ending}))
    monkeypatch.setenv("LONGNET_PREPROCESSED", str(pre))
    monkeypatch.setenv("LONGNET_RAW", str(raw))
    return plans, pre


def test_move_plans_renames_dataset_plans_and_data_identifiers(tmp_path, monkeypatch):
    plans, pre = _plans_setup(tmp_path, monkeypatch, target_ending=".nii")
    assert main_move_plans(["-s", "1", "-t", "2", "-sp", "nnUNetPlans", "-tp", "nnUNetPlansFrom1"]) == 0
    text = (pre / "Dataset002_Tgt" / "nnUNetPlansFrom1.json").read_text()
    moved = json.loads(text)
    assert list(moved) == list(plans)  # unsorted: the source's key order is kept
    assert moved["dataset_name"] == "Dataset002_Tgt" and moved["plans_name"] == "nnUNetPlansFrom1"
    assert moved["image_reader_writer"] == "NibabelIO"
    confs = moved["configurations"]
    assert confs["2d"] == {"data_identifier": "nnUNetPlansFrom1_2d", "batch_size": 12}
    assert confs["3d_fullres"]["data_identifier"] == "nnUNetPlansFrom1_3d_fullres"
    assert confs["3d_lowres"]["data_identifier"] == "nnUNetPlansFrom1_lowres_custom"
    assert confs["3d_cascade_fullres"] == {"inherits_from": "3d_fullres"}
    assert moved["original_median_spacing_after_transp"] == plans["original_median_spacing_after_transp"]
    assert text.startswith('{\n    "dataset_name"')  # indent 4


def test_move_plans_same_name_keeps_identifiers(tmp_path, monkeypatch):
    plans, pre = _plans_setup(tmp_path, monkeypatch)
    assert main_move_plans(["-s", "Dataset001_Src", "-t", "Dataset002_Tgt", "-sp", "nnUNetPlans"]) == 0
    moved = json.loads((pre / "Dataset002_Tgt" / "nnUNetPlans.json").read_text())
    assert moved["configurations"] == plans["configurations"]
    assert moved["dataset_name"] == "Dataset002_Tgt" and moved["image_reader_writer"] == "SimpleITKIO"


def test_move_plans_errors(tmp_path, monkeypatch, capsys):
    _plans_setup(tmp_path, monkeypatch, target_pre=False)
    assert main_move_plans(["-s", "1", "-t", "Dataset002_Tgt", "-sp", "nnUNetPlans", "-tp", "P2"]) == 1
    assert "target dataset has no preprocessed folder" in _one_error_line(capsys)
    assert main_move_plans(["-s", "1", "-t", "Dataset002_Tgt", "-sp", "Missing"]) == 1
    assert "source plans not found" in _one_error_line(capsys)
    assert main_move_plans(["-s", "1", "-t", "Dataset002_Tgt", "-sp", "nnUNetPlans", "-tp", "../x"]) == 1
    assert "-tp '../x' is not a valid name" in _one_error_line(capsys)


# -- nnU-Net v1 dataset conversion ---------------------------------------------------------------------------------

def _v1_task(root: Path) -> Path:
    task = root / "Task011_Old"
    for sub, names in (("imagesTr", ["c1_0000.nii.gz", "c1_0001.nii.gz"]), ("labelsTr", ["c1.nii.gz"]),
                       ("imagesTs", ["t1_0000.nii.gz", "t1_0001.nii.gz"])):
        for n in names:
            write_image(task / sub / n, np.zeros((2, 3, 4), np.uint8))
    v1 = {"name": "Old", "description": "d", "tensorImageSize": "4D", "reference": "r", "licence": "l",
          "release": "1.0", "modality": {"0": "FLAIR", "1": "T1w"},
          "labels": {"0": "background", "1": "edema", "2": "tumour"}, "numTraining": 1, "numTest": 1,
          "training": [{"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"}],
          "test": ["./imagesTs/t1.nii.gz"]}
    (task / "dataset.json").write_text(json.dumps(v1))
    return task


def test_convert_old_dataset(tmp_path, monkeypatch):
    from longnet.dataset.raw import RawDataset

    task = _v1_task(tmp_path)
    monkeypatch.setenv("LONGNET_RAW", str(tmp_path / "raw"))
    assert main_convert_old([str(task), "Dataset011_Old"]) == 0
    dest = tmp_path / "raw" / "Dataset011_Old"
    text = (dest / "dataset.json").read_text()
    assert list(json.loads(text).items()) == [
        ("name", "Old"), ("description", "d"), ("reference", "r"), ("licence", "l"), ("release", "1.0"),
        ("labels", {"background": 0, "edema": 1, "tumour": 2}), ("numTraining", 1),
        ("channel_names", {"0": "FLAIR", "1": "T1w"}), ("file_ending", ".nii.gz")]
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        assert sorted(p.name for p in (dest / sub).iterdir()) == sorted(p.name for p in (task / sub).iterdir())
        for p in (task / sub).iterdir():
            assert (dest / sub / p.name).read_bytes() == p.read_bytes()
    assert not (dest / "labelsTs").exists()
    assert list(RawDataset(dest).cases) == ["c1"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset011_Old"]


@pytest.mark.parametrize("existing", ["Dataset011_Old", "Dataset011_Other"])
def test_convert_old_dataset_refuses_existing_target(tmp_path, monkeypatch, capsys, existing):
    task = _v1_task(tmp_path)
    (tmp_path / "raw" / existing).mkdir(parents=True)
    monkeypatch.setenv("LONGNET_RAW", str(tmp_path / "raw"))
    assert main_convert_old([str(task), "Dataset011_Old"]) == 1
    line = _one_error_line(capsys)
    assert "already" in line
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [existing]
    assert list((tmp_path / "raw" / existing).iterdir()) == []


def test_convert_old_dataset_bad_inputs(tmp_path, monkeypatch, capsys):
    task = _v1_task(tmp_path)
    monkeypatch.setenv("LONGNET_RAW", str(tmp_path / "raw"))
    assert main_convert_old([str(task), "../Dataset011_Old"]) == 1
    assert "must look like DatasetXXX_Name" in _one_error_line(capsys)
    (task / "dataset.json").write_text(json.dumps({"labels": {"0": "background"}}))
    assert main_convert_old([str(task), "Dataset011_Old"]) == 1
    assert "'modality'" in _one_error_line(capsys)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []
