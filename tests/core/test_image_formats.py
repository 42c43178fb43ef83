"""nnU-Net's image readers/writers: 2D natural images (PNG/BMP/TIF), 2D NIfTI, 3D TIFF with a spacing sidecar.

Each format goes through `longnet_plan_and_preprocess` on a tiny raw dataset; readers round-trip label maps; the
reader choice follows dataset.json `overwrite_image_reader_writer` and nnU-Net's fallback order."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from raw_datasets import write_image
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.dataset.reader_choice import (reader_writer_by_name, reader_writer_for, reader_writer_for_ending,
                                           reader_writer_for_file, reader_writer_for_plans)
from longnet.dataset.readers import NaturalImage2DIO, SimpleITKIO, Tiff3DIO
from longnet.errors import DatasetError, LongnetError
from longnet.io.storage import load_case

H, W, N_CASES = 32, 40, 6
NAME = "Dataset321_Formats"


def _case_arrays(i: int, shape=(H, W)) -> tuple[np.ndarray, np.ndarray]:
    """uint8 image (noise + bright square) and its 0/1 label; the square moves per case."""
    rng = np.random.default_rng(i)
    seg = np.zeros(shape, np.uint8)
    seg[..., 6 + i: 18 + i, 10 + i: 22 + i] = 1
    img = (rng.integers(20, 80, shape) + 120 * seg).astype(np.uint8)
    return img, seg


def _dataset_json(folder: Path, ending: str, channels: int = 1, **extra) -> None:
    dj = {"channel_names": {str(c): f"ch{c}" for c in range(channels)}, "labels": {"background": 0, "square": 1},
          "numTraining": N_CASES, "file_ending": ending, **extra}
    (folder / "dataset.json").write_text(json.dumps(dj, indent=4))


def _natural(root: Path, ending: str, rgb: bool = False) -> Path:
    folder = root / NAME
    for d in ("imagesTr", "labelsTr"):
        (folder / d).mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".bmp": "BMP"}.get(ending)
    for i in range(N_CASES):
        img, seg = _case_arrays(i)
        if rgb:
            img = np.stack([img, 255 - img, img // 2], -1)
        for arr, dest in ((img, folder / "imagesTr" / f"c{i}_0000{ending}"), (seg, folder / "labelsTr" / f"c{i}{ending}")):
            if fmt:
                Image.fromarray(arr).save(dest, format=fmt)
            else:
                tifffile.imwrite(dest, arr)
    _dataset_json(folder, ending, 3 if rgb else 1)
    return folder


def _nifti_2d(root: Path) -> Path:
    folder = root / NAME
    for i in range(N_CASES):
        img, seg = _case_arrays(i)
        write_image(folder / "imagesTr" / f"c{i}_0000.nii.gz", img.astype(np.float32), spacing=(0.7, 0.5))
        write_image(folder / "labelsTr" / f"c{i}.nii.gz", seg, spacing=(0.7, 0.5))
    _dataset_json(folder, ".nii.gz")
    return folder


def _tiff_3d(root: Path) -> Path:
    folder = root / NAME
    for d in ("imagesTr", "labelsTr"):
        (folder / d).mkdir(parents=True, exist_ok=True)
    for i in range(N_CASES):
        img, seg = _case_arrays(i, (4, H, W))
        tifffile.imwrite(folder / "imagesTr" / f"c{i}_0000.tif", img, photometric="minisblack")
        tifffile.imwrite(folder / "labelsTr" / f"c{i}.tif", seg, photometric="minisblack")
        for d in ("imagesTr", "labelsTr"):
            (folder / d / f"c{i}.json").write_text(json.dumps({"spacing": [3.0, 1.0, 1.0]}))
    _dataset_json(folder, ".tif")
    return folder


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Raw/preprocessed/results roots in tmp_path; a small intensity-sampling budget keeps the fingerprint fast."""
    monkeypatch.setattr("longnet.fingerprint.extractor.FOREGROUND_SAMPLE_BUDGET", 1e5)
    for var, sub in (("LONGNET_RAW", "raw"), ("LONGNET_PREPROCESSED", "pre"), ("LONGNET_RESULTS", "res")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


FORMATS_2D = {
    "png_gray": (lambda r: _natural(r, ".png"), "NaturalImage2DIO", 1),
    "png_rgb": (lambda r: _natural(r, ".png", rgb=True), "NaturalImage2DIO", 3),
    "bmp": (lambda r: _natural(r, ".bmp"), "NaturalImage2DIO", 1),
    "tif_2d": (lambda r: _natural(r, ".tif"), "NaturalImage2DIO", 1),
    "nifti_2d": (_nifti_2d, "SimpleITKIO", 1),
}


@pytest.mark.parametrize("fmt", list(FORMATS_2D))
def test_2d_dataset_plans_only_2d_and_preprocesses(fmt, roots, capsys):
    make, reader, channels = FORMATS_2D[fmt]
    make(roots / "raw")
    assert main_plan_and_preprocess(["-d", "321", "-np", "1"]) == 0
    out = capsys.readouterr().out
    pre = roots / "pre" / NAME
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["image_reader_writer"] == reader
    assert list(plans["configurations"]) == ["2d"]
    for skipped in ("3d_fullres", "3d_lowres"):
        assert f"configuration {skipped} is not planned for {NAME}: images are 2D (one slice)" in out
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    first = fingerprint["spacings"][0]
    assert first[0] == pytest.approx(999 * max(first[1:]))  # nnU-Net's: the single slice is never resampled
    for i in range(N_CASES):
        data, seg, _ = load_case(pre / "nnUNetPlans_2d", f"c{i}")
        assert data.shape[0] == channels and data.shape[1] == 1 and data.ndim == 4
        assert seg.shape == (1, *data.shape[1:]) and set(np.unique(seg)) == {0, 1}
    if fmt != "nifti_2d":
        assert data.shape[2:] == (H, W)  # spacing 1: no in-plane resampling either


def test_3d_tiff_reads_spacing_from_sidecar(roots, capsys):
    folder = _tiff_3d(roots / "raw")
    assert main_plan_and_preprocess(["-d", "321", "-np", "1", "-c", "3d_fullres"]) == 0
    pre = roots / "pre" / NAME
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["image_reader_writer"] == "Tiff3DIO" and "3d_fullres" in plans["configurations"]
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    assert fingerprint["spacings"][0] == [3.0, 1.0, 1.0]
    data, _, _ = load_case(pre / plans["configurations"]["3d_fullres"]["data_identifier"], "c0")
    assert data.shape[:2] == (1, 4)
    assert (pre / "gt_segmentations" / "c0.json").is_file()  # the label's sidecar travels with it
    seg, props = Tiff3DIO().read_seg(folder / "labelsTr" / "c0.tif")
    assert props["spacing"] == [3.0, 1.0, 1.0] and seg.shape == (1, 4, H, W)


def test_rgb_png_needs_three_channel_names(roots):
    folder = _natural(roots / "raw", ".png", rgb=True)
    _dataset_json(folder, ".png", channels=1)
    from longnet.dataset.integrity import verify_dataset_integrity
    from longnet.dataset.raw import RawDataset

    problems = verify_dataset_integrity(RawDataset(folder))
    assert len(problems) == N_CASES and "case has 3 channel(s) in 1 file(s)" in problems[0][1]
    assert main_plan_and_preprocess(["-d", "321", "-np", "1"]) == 1


def test_png_dataset_passes_integrity_check(roots):
    from longnet.dataset.integrity import dataset_dimension, verify_dataset_integrity
    from longnet.dataset.raw import RawDataset

    raw = RawDataset(_natural(roots / "raw", ".png", rgb=True))
    assert raw.cases["c0"].images == [raw.folder / "imagesTr" / "c0_0000.png"]
    assert dataset_dimension(raw) == 2 and verify_dataset_integrity(raw) == []


# -- round trips ------------------------------------------------------------------------------------------
def _file_type(path: Path) -> str:
    if path.suffix in (".png", ".bmp"):
        with Image.open(path) as im:
            return im.format
    if path.suffix in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tf:
            return f"TIFF{len(tf.series[0].shape)}D"
    return path.suffix


@pytest.mark.parametrize("ending,fmt", [(".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF2D")])
def test_natural_image_seg_round_trip(tmp_path, ending, fmt):
    rw = NaturalImage2DIO()
    _, seg = _case_arrays(2)
    seg[0, 0] = 7
    src = tmp_path / f"a{ending}"
    (Image.fromarray(seg).save(src, format=fmt) if fmt != "TIFF2D" else tifffile.imwrite(src, seg))
    got, props = rw.read_seg(src)
    assert got.shape == (1, 1, H, W) and got.dtype == np.int16 and props == {"spacing": [999.0, 1.0, 1.0]}
    dest = tmp_path / f"b{ending}"
    rw.write_seg(got[0], dest, props)
    assert _file_type(dest) == fmt
    again, _ = rw.read_seg(dest)
    np.testing.assert_array_equal(again, got)


def test_png_sixteen_bit_labels_and_rgb_channels(tmp_path):
    rw = NaturalImage2DIO()
    seg = np.zeros((1, 1, 4, 5), np.int16)
    seg[0, 0, 1, 1] = 300
    rw.write_seg(seg, tmp_path / "s.png", {"spacing": [999.0, 1.0, 1.0]})
    with Image.open(tmp_path / "s.png") as im:
        assert im.mode.startswith("I")  # 16-bit, as nnU-Net writes labels >= 255
    np.testing.assert_array_equal(rw.read_seg(tmp_path / "s.png")[0], seg)
    with pytest.raises(LongnetError, match="8-bit BMP"):
        rw.write_seg(seg, tmp_path / "s.bmp", {})
    rgba = np.random.default_rng(0).integers(0, 255, (4, 5, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "x_0000.png")
    Image.fromarray(rgba[..., 0]).save(tmp_path / "x_0001.png")
    data, _ = rw.read_images([tmp_path / "x_0000.png", tmp_path / "x_0001.png"])
    assert data.shape == (5, 1, 4, 5) and data.dtype == np.float32
    np.testing.assert_array_equal(data[:4, 0], np.moveaxis(rgba, -1, 0))
    Image.fromarray(rgba[:3, :3, :2].copy()).save(tmp_path / "la.png")  # gray + alpha: not an nnU-Net image
    with pytest.raises(DatasetError, match="not a 2D gray, RGB or RGBA image"):
        rw.read_images([tmp_path / "la.png"])


def test_nifti_2d_and_3d_tiff_round_trip(tmp_path):
    _, seg = _case_arrays(1)
    write_image(tmp_path / "a.nii.gz", seg, spacing=(0.7, 0.5), origin=(3.0, -2.0))
    got, props = SimpleITKIO().read_seg(tmp_path / "a.nii.gz")
    assert got.shape == (1, 1, H, W) and props["spacing"] == pytest.approx([999 * 0.7, 0.5, 0.7])
    SimpleITKIO().write_seg(got[0], tmp_path / "b.nii.gz", props)
    img = sitk.ReadImage(str(tmp_path / "b.nii.gz"))
    assert img.GetDimension() == 2 and img.GetSpacing() == pytest.approx((0.7, 0.5))
    assert img.GetOrigin() == pytest.approx((3.0, -2.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), seg)

    _, seg3 = _case_arrays(1, (3, H, W))
    tifffile.imwrite(tmp_path / "c.tif", seg3, photometric="minisblack")
    (tmp_path / "c.json").write_text(json.dumps({"spacing": [2.5, 0.5, 0.5]}))
    got, props = Tiff3DIO().read_seg(tmp_path / "c.tif")
    Tiff3DIO().write_seg(got, tmp_path / "d.tif", props)
    assert _file_type(tmp_path / "d.tif") == "TIFF3D"
    assert json.loads((tmp_path / "d.json").read_text()) == {"spacing": [2.5, 0.5, 0.5]}
    again, props2 = Tiff3DIO().read_seg(tmp_path / "d.tif")
    np.testing.assert_array_equal(again, got)
    assert props2 == props


def test_export_writes_the_plans_format(roots):
    """Prediction export goes through the writer the plans name: a PNG dataset gets PNG label maps back."""
    from longnet.dataset.labels import LabelManager
    from longnet.inference.export import export_prediction
    from longnet.planning.plans import Plans
    from longnet.preprocessing.preprocessor import preprocess_case

    folder = _natural(roots / "raw", ".png")
    assert main_plan_and_preprocess(["-d", "321", "-np", "1", "-c", "2d"]) == 0
    plans = Plans.load(roots / "pre" / NAME / "nnUNetPlans.json")
    dj = json.loads((folder / "dataset.json").read_text())
    rw = reader_writer_for_plans(plans)
    data, props = rw.read_images([folder / "imagesTr" / "c3_0000.png"])
    data, _, props = preprocess_case(data, None, props, plans, "2d", dj)
    truth, _ = rw.read_seg(folder / "labelsTr" / "c3.png")
    logits = np.stack([1.0 - truth[0], truth[0]]).astype(np.float32)  # cropping is a no-op for noisy images
    dest = export_prediction(logits, props, plans, plans.configuration("2d"), LabelManager.from_dataset_json(dj),
                             roots / "out" / "c3.png")
    assert _file_type(dest) == "PNG"
    np.testing.assert_array_equal(rw.read_seg(dest)[0], truth)


# -- choice -----------------------------------------------------------------------------------------------
def test_choice_follows_nnunet_order(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    assert reader_writer_for_ending(".tif", tmp_path / "flat.tif").name == "NaturalImage2DIO"
    assert reader_writer_for_ending(".tif", tmp_path / "stack.tif").name == "Tiff3DIO"  # 3D falls through
    assert reader_writer_for_ending(".TIFF").name == "Tiff3DIO"
    assert reader_writer_for_ending(".PNG").name == "NaturalImage2DIO"
    assert reader_writer_for_ending(".nii").name == "NibabelIO"
    write_image(tmp_path / "v.nii.gz", np.zeros((2, 3, 4), np.float32))
    assert reader_writer_for_file(tmp_path / "v.nii.gz").name == "SimpleITKIO"
    with pytest.raises(DatasetError, match="no image reader for file ending '.jpg'"):
        reader_writer_for({"file_ending": ".jpg"}, None, "dataset.json")
    assert reader_writer_for_plans({"configurations": {}}).name == "SimpleITKIO"  # nnU-Net's default
    with pytest.raises(LongnetError, match="unknown image_reader_writer 'FooIO'"):
        reader_writer_by_name("FooIO")


def test_overwrite_image_reader_writer(tmp_path, capsys):
    write_image(tmp_path / "v.nii.gz", np.zeros((2, 3, 4), np.float32))
    dj = {"file_ending": ".nii.gz"}
    assert reader_writer_for({**dj, "overwrite_image_reader_writer": "NibabelIOWithReorient"}).name == \
        "NibabelIOWithReorient"
    assert reader_writer_for({**dj, "overwrite_image_reader_writer": "None"}, tmp_path / "v.nii.gz").name == \
        "SimpleITKIO"
    for _ in range(2):
        rw = reader_writer_for({**dj, "overwrite_image_reader_writer": "MadeUpIO"}, tmp_path / "v.nii.gz", "dj")
        assert rw.name == "SimpleITKIO"
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "'MadeUpIO' is not a known reader/writer" in err


def test_overwrite_reaches_the_plans(roots):
    folder = _nifti_2d(roots / "raw")
    _dataset_json(folder, ".nii.gz", overwrite_image_reader_writer="NibabelIO")
    assert main_plan_and_preprocess(["-d", "321", "-np", "1", "--no_pp"]) == 0
    plans = json.loads((roots / "pre" / NAME / "nnUNetPlans.json").read_text())
    assert plans["image_reader_writer"] == "NibabelIO"


def test_reorienting_reader_restores_orientation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_image(tmp_path / "a.nii.gz", arr, spacing=(1.0, 2.0, 3.0))  # identity direction = LPS
    rw = reader_writer_by_name("NibabelIOWithReorient")
    seg, props = rw.read_seg(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(seg[0], arr[:, ::-1, ::-1])  # RAS: x and y flipped
    rw.write_seg(seg, tmp_path / "b.nii.gz", props)
    back = sitk.ReadImage(str(tmp_path / "b.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)
    assert back.GetDirection() == pytest.approx(np.eye(3).ravel().tolist())
