"""Meaningless geometry and voxel values are refused where every image is read (the reader classes), so the
fingerprint, the integrity check and preprocessing all refuse them with one line naming the file and the value:
spacing 0 / negative / NaN / inf / below 1e-4 mm, complex voxels, integers float32 would merge, and a header that
claims more voxel data than the limit (checked before anything is allocated)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_image_files import BAD_NIFTI_IMAGES, mha_huge, mha_spacing_x, nifti_spacing_x
from raw_datasets import make_raw_dataset
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.dataset.readers import NaturalImage2DIO, SimpleITKIO, Tiff3DIO
from longnet.dataset.value_checks import check_voxel_values, spacing_problem
from longnet.errors import DatasetError
from reliability_helpers import DATASET, assert_message, assert_one_error, set_roots, snapshot

MHA_IMAGES = {"mha_spacing_zero": mha_spacing_x("0"), "mha_spacing_negative": mha_spacing_x("-2"),
              "mha_spacing_tiny": mha_spacing_x("1e-6"), "mha_header_claims_petabytes": mha_huge}


def _refusal(read, path: Path) -> str:
    with pytest.raises(DatasetError) as info:
        read()
    assert info.value.path == str(path), f"error names {info.value.path}, not {path}"
    return info.value.message


@pytest.mark.parametrize("kind", list(BAD_NIFTI_IMAGES) + list(MHA_IMAGES))
def test_simpleitk_reader_refuses_meaningless_file(tmp_path, kind):
    make = {**BAD_NIFTI_IMAGES, **MHA_IMAGES}[kind]
    path = tmp_path / ("img.mha" if kind in MHA_IMAGES else "img.nii.gz")
    expected = make(path)
    message = _refusal(lambda: SimpleITKIO().read_images([path]), path)
    assert expected in message


def test_bad_spacing_of_a_label_map_is_refused(tmp_path):
    path = tmp_path / "case.nii.gz"
    nifti_spacing_x(0.0, np.zeros((10, 12, 8), np.uint8))(path)
    assert "spacing [0, 1, 1] is not positive" in _refusal(lambda: SimpleITKIO().read_seg(path), path)


def test_zero_spacing_of_a_single_slice_axis_is_tolerated(tmp_path):
    """A 2D slice saved as a one-slice volume often carries no slice spacing; nothing depends on it."""
    assert spacing_problem([0.8, 0.8, 0.0], size=[64, 64, 1]) is None
    assert spacing_problem([0.8, 0.8, 0.0], size=[64, 64, 2]) is not None
    assert spacing_problem([0.8, 0.8, float("nan")], size=[64, 64, 1]) is not None


@pytest.mark.parametrize("values,dtype", [([0, 2 ** 24, -2 ** 24], np.int32), ([2 ** 30, 2 ** 40], np.int64),
                                          ([7, 2 ** 62], np.uint64)])
def test_integers_float32_holds_exactly_are_accepted(values, dtype):
    check_voxel_values(np.array(values, dtype), "x.nii.gz")


def test_integers_float32_would_round_are_refused():
    with pytest.raises(DatasetError, match=r"uint32 voxel values in \[1, 16777217\]"):
        check_voxel_values(np.array([1, 2 ** 24 + 1], np.uint32), "x.nii.gz")


# -- TIFF and natural images -------------------------------------------------------------------------------------
def _tiff(path: Path, arr: np.ndarray, spacing=None) -> Path:
    import tifffile

    tifffile.imwrite(str(path), arr, photometric="minisblack")
    if spacing is not None:
        (path.parent / "case.json").write_text(json.dumps({"spacing": spacing}))
    return path


@pytest.mark.parametrize("spacing,text", [([float("inf"), 1, 1], "spacing [inf, 1, 1] is not finite"),
                                          ([1e-9, 1, 1], "spacing [1e-09, 1, 1] is below 0.0001 mm")])
def test_tiff_sidecar_spacing_is_refused(tmp_path, spacing, text):
    path = _tiff(tmp_path / "case_0000.tif", np.ones((4, 5, 6), np.float32), spacing)
    side = tmp_path / "case.json"
    with pytest.raises(DatasetError) as info:
        Tiff3DIO().read_images([path])
    assert info.value.path == str(side) and text in info.value.message


@pytest.mark.parametrize("reader", [Tiff3DIO, NaturalImage2DIO])
@pytest.mark.parametrize("kind", ["complex", "uint64"])
def test_tiff_voxel_values_are_refused(tmp_path, reader, kind):
    shape = (4, 5, 6) if reader is Tiff3DIO else (5, 6)
    arr = (np.ones(shape) + 1j).astype(np.complex64) if kind == "complex" else np.full(shape, 2 ** 62 + 1, np.uint64)
    path = _tiff(tmp_path / "case_0000.tif", arr, [1, 1, 1])
    text = "complex-valued image" if kind == "complex" else "cannot be held exactly as float32"
    assert text in _refusal(lambda: reader().read_images([path]), path)


@pytest.mark.parametrize("ending", [".tif", ".png"])
def test_size_limit_applies_to_natural_images_and_tiffs(tmp_path, monkeypatch, ending):
    """The limit is checked from the header for every format (lowered here so that a small file exceeds it)."""
    path = tmp_path / f"case_0000{ending}"
    if ending == ".png":
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)
    else:
        _tiff(path, np.zeros((40, 50), np.uint8))
    monkeypatch.setenv("LONGNET_MAX_IMAGE_GIB", "1e-7")  # about 107 bytes
    assert "header claims a" in _refusal(lambda: NaturalImage2DIO().read_images([path]), path)
    monkeypatch.setenv("LONGNET_MAX_IMAGE_GIB", "lots")
    with pytest.raises(DatasetError, match="LONGNET_MAX_IMAGE_GIB must be a positive number"):
        NaturalImage2DIO().read_images([path])


# -- through the command ----------------------------------------------------------------------------------------
@pytest.fixture
def roots(tmp_path, monkeypatch):
    return set_roots(monkeypatch, tmp_path)


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify"])
@pytest.mark.parametrize("kind", list(BAD_NIFTI_IMAGES))
def test_plan_and_preprocess_refuses_meaningless_image(roots, tmp_path, capsys, kind, verify):
    folder = make_raw_dataset(roots["raw"], n_cases=4)
    expected = BAD_NIFTI_IMAGES[kind](folder / "imagesTr" / "case_001_0000.nii.gz")
    raw_before, res_before = snapshot(folder), snapshot(roots["res"])
    argv = ["-d", "999", "-c", "3d_fullres", "-np", "1"] + (["--verify_dataset_integrity"] if verify else [])
    assert main_plan_and_preprocess(argv) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, tmp_path, "case_001_0000.nii.gz", expected)
    assert not (roots["pre"] / DATASET).exists()
    assert snapshot(folder) == raw_before and snapshot(roots["res"]) == res_before


def test_plan_and_preprocess_refuses_label_map_with_zero_spacing(roots, tmp_path, capsys):
    folder = make_raw_dataset(roots["raw"], n_cases=4)
    label = folder / "labelsTr" / "case_002.nii.gz"
    nifti_spacing_x(0.0, np.zeros((10, 12, 8), np.uint8))(label)
    raw_before = snapshot(folder)
    assert main_plan_and_preprocess(["-d", "999", "-c", "3d_fullres", "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, tmp_path, "case_002.nii.gz", "spacing [0, 1, 1] is not positive")
    assert not (roots["pre"] / DATASET).exists() and snapshot(folder) == raw_before
