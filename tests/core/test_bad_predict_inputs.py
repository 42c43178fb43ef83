"""Prediction inputs get the checks training data gets: a broken header, a file cut short, a meaningless spacing or
an image of the wrong dimension in any case refuses the whole run before anything is written; NaN/inf voxels are
refused case by case (as in training), and a case that fails midway leaves only complete predictions, which
`--continue_prediction` then keeps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bad_image_files import BAD_NIFTI_IMAGES
from raw_datasets import write_image
from longnet.cli.predict import main as predict_main
from longnet.errors import DatasetError
from longnet.inference.input_checks import check_prediction_inputs, model_image_dimension
from longnet.dataset.readers import SimpleITKIO
from longnet.planning.plans import Plans
from reliability_helpers import (assert_message, assert_one_error, make_seg_model_folder, predict_args, set_roots,
                                 snapshot, temp_leftovers)
from test_predict_export import tiny_plans

ZYX = (10, 12, 8)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def roots(tmp_path, monkeypatch):
    roots = set_roots(monkeypatch, tmp_path)
    make_seg_model_folder(roots["res"])
    return roots


def _inputs(folder: Path, cases=("a", "b", "c")) -> Path:
    rng = np.random.default_rng(0)
    for c in cases:
        write_image(folder / f"{c}_0000.nii.gz", rng.normal(100, 10, ZYX).astype(np.float32))
    return folder


def _with_value(value) -> np.ndarray:
    arr = np.random.default_rng(1).normal(100, 10, ZYX).astype(np.float32)
    arr[2, 3, 4] = value
    return arr


def _refused(argv, capsys, root: Path, file_name: str, *keywords: str) -> str:
    assert predict_main(argv) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, root, file_name, *keywords)
    return err


def _truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "unreadable image file"


def _two_d(path: Path) -> str:
    write_image(path, np.random.default_rng(2).normal(size=ZYX[1:]).astype(np.float32))
    return "image is 2D but the model (3d_fullres) was trained on 3D images"


def _vector(path: Path) -> str:
    write_image(path, np.random.default_rng(2).normal(size=(2,) + ZYX).astype(np.float32))
    return "vector image with 8 components"


HEADER_KINDS = {"truncated": _truncate, "2d_image": _two_d, "vector_image": _vector,
                **{k: BAD_NIFTI_IMAGES[k] for k in ("spacing_zero", "spacing_negative", "spacing_nan", "spacing_inf",
                                                     "spacing_tiny", "header_claims_terabytes", "complex_voxels")}}


@pytest.mark.parametrize("kind", list(HEADER_KINDS))
def test_bad_last_case_refuses_the_run_before_anything_is_written(roots, tmp_path, capsys, kind):
    inp = _inputs(tmp_path / "in")
    expected = HEADER_KINDS[kind](inp / "c_0000.nii.gz")
    inp_before = snapshot(inp)
    out = tmp_path / "out"
    _refused(predict_args(inp, out), capsys, tmp_path, "c_0000.nii.gz", expected)
    assert not out.exists(), "a refused prediction created its output folder"
    assert snapshot(inp) == inp_before


def test_refusal_leaves_an_existing_output_folder_unchanged(roots, tmp_path, capsys):
    inp = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert predict_main(predict_args(inp, out)) == 0
    before = snapshot(out)
    BAD_NIFTI_IMAGES["spacing_nan"](inp / "b_0000.nii.gz")
    _refused(predict_args(inp, out), capsys, tmp_path, "b_0000.nii.gz", "spacing [nan, 1, 1]")
    assert snapshot(out) == before


@pytest.mark.parametrize("value,text", [(np.nan, "1 NaN voxel(s)"), (np.inf, "1 inf voxel(s)")])
def test_non_finite_first_case_writes_nothing(roots, tmp_path, capsys, value, text):
    inp = _inputs(tmp_path / "in")
    write_image(inp / "a_0000.nii.gz", _with_value(value))
    out = tmp_path / "out"
    _refused(predict_args(inp, out), capsys, tmp_path, "a_0000.nii.gz", text)
    assert not out.exists()


def test_case_failing_midway_leaves_complete_predictions_and_resumes(roots, tmp_path, capsys):
    inp = _inputs(tmp_path / "in")
    good_c = (inp / "c_0000.nii.gz").read_bytes()
    write_image(inp / "c_0000.nii.gz", _with_value(np.nan))
    out = tmp_path / "out"
    _refused(predict_args(inp, out), capsys, tmp_path, "c_0000.nii.gz", "1 NaN voxel(s)")
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # no model info, no temp file
    assert not temp_leftovers(out)
    done = snapshot(out)
    (inp / "c_0000.nii.gz").write_bytes(good_c)
    assert predict_main(predict_args(inp, out, "--continue_prediction")) == 0
    after = snapshot(out)
    assert {k: after[k] for k in done} == done  # the finished cases were kept, not redone
    assert sorted(after) == ["a.nii.gz", "b.nii.gz", "c.nii.gz", "dataset.json", "plans.json"]


def test_integers_float32_would_merge_are_refused(roots, tmp_path, capsys):
    inp = _inputs(tmp_path / "in", cases=("a",))
    BAD_NIFTI_IMAGES["int64_near_2_62"](inp / "a_0000.nii.gz")
    _refused(predict_args(inp, tmp_path / "out"), capsys, tmp_path, "a_0000.nii.gz", "cannot be held exactly")
    assert not (tmp_path / "out").exists()


# -- the model's dimension ---------------------------------------------------------------------------------------
def _plans_2d(with_3d: bool, median_shape=(1, 64, 64), median_spacing=(999.0, 1.0, 1.0)) -> Plans:
    plans = tiny_plans()
    conf2d = dict(plans["configurations"]["3d_fullres"], patch_size=[16, 16], spacing=[1.0, 1.0])
    plans["configurations"] = {"2d": conf2d, **({"3d_fullres": plans["configurations"]["3d_fullres"]}
                                                if with_3d else {})}
    plans["original_median_shape_after_transp"] = list(median_shape)
    plans["original_median_spacing_after_transp"] = list(median_spacing)
    return Plans(plans)


def test_model_image_dimension_from_plans():
    assert model_image_dimension(Plans(tiny_plans()), "3d_fullres") == 3
    assert model_image_dimension(_plans_2d(with_3d=True, median_shape=(40, 64, 64)), "2d") == 3  # slice-wise
    assert model_image_dimension(_plans_2d(with_3d=False), "2d") == 2  # planned from 2D images
    # one-slice volumes (3D files) keep their slice spacing: such a model takes them, so no check
    assert model_image_dimension(_plans_2d(with_3d=False, median_spacing=(2.0, 1.0, 1.0)), "2d") is None
    plans = _plans_2d(with_3d=False)
    del plans.plans["original_median_shape_after_transp"]
    assert model_image_dimension(plans, "2d") is None  # the plans do not tell: no check


def test_3d_image_into_a_model_trained_on_2d_images_is_refused(tmp_path):
    path = write_image(tmp_path / "a_0000.nii.gz", np.ones(ZYX, np.float32))
    with pytest.raises(DatasetError, match=r"image is 3D but the model \(2d\) was trained on 2D images") as info:
        check_prediction_inputs(SimpleITKIO(), [("a", [path])], model_image_dimension(_plans_2d(False), "2d"), "2d")
    assert info.value.path == str(path)
