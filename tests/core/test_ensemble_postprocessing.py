"""Ensembling, keep-largest-component postprocessing (determine/apply) and nnU-Net-schema evaluation on tiny
hand-built folders whose right answers are known."""
from __future__ import annotations

import json
import math
import pickletools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from raw_datasets import SHARED_DATA, write_image
from longnet.cli.ensemble import main as ensemble_main
from longnet.cli.evaluate_simple import main_folder, main_simple
from longnet.cli.postprocessing import main_apply, main_determine
from longnet.postprocessing.components import keep_largest_component, remove_all_but_largest_component

SPACING, ORIGIN = (0.5, 1.0, 2.0), (3.0, -4.0, 5.0)  # x, y, z (SimpleITK order)
DJ = {"channel_names": {"0": "ch0"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 2,
      "file_ending": ".nii.gz"}
REFERENCE_SUMMARY = (Path(__file__).resolve().parents[3] / "shared" / "reference" / "nnunetv2-2.8.1" /
                     "Dataset004_Hippocampus" / "model" / "nnUNetTrainer_cpubench__nnUNetPlans__2d" / "fold_0" /
                     "validation" / "summary.json")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    monkeypatch.setenv("LONGNET_DEF_N_PROC", "1")


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_seg(path: Path, arr: np.ndarray) -> Path:
    return write_image(path, arr.astype(np.uint8), SPACING, ORIGIN)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def assert_one_error_line(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longnet: error: "), err
    for w in words:
        assert w in err[0], err[0]


# -- connected components -------------------------------------------------------------------------------------

def test_keep_largest_uses_full_connectivity_and_keeps_ties():
    m = np.zeros((4, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner neighbours: one component under 26-connectivity
    m[3, 3, 3] = True
    assert keep_largest_component(m).sum() == 2 and not keep_largest_component(m)[3, 3, 3]
    tie = np.zeros((1, 5, 5), bool)
    tie[0, 0, 0] = tie[0, 4, 4] = True
    assert keep_largest_component(tie).sum() == 2  # tied largest components are all kept
    seg = np.zeros((1, 6, 6), np.int16)
    seg[0, :2, :2] = 1
    seg[0, 2, 2] = 2  # diagonal to label 1: same joint-foreground component (8-connected in-plane)
    seg[0, 5, 5] = 1
    out = remove_all_but_largest_component(seg, [1, 2])
    assert out[0, 5, 5] == 0 and out[0, 2, 2] == 2 and (out[0, :2, :2] == 1).all()
    assert (remove_all_but_largest_component(seg, 2) == seg).all()


# -- ensemble -------------------------------------------------------------------------------------------------

def _props() -> dict:
    return {"sitk_stuff": {"spacing": list(SPACING), "origin": list(ORIGIN), "direction": list(np.eye(3).ravel())},
            "spacing": list(SPACING[::-1]), "shape_before_cropping": [2, 3, 4],
            "bbox_used_for_cropping": [[0, 2], [0, 3], [0, 4]],
            "shape_after_cropping_and_before_resampling": [2, 3, 4]}


def _prob_folder(folder: Path, probs: dict[str, np.ndarray], longnet_style: bool) -> Path:
    """longnet style: {case}.npz + {case}.json (+ a .pkl); nnU-Net style: {case}.npz + label map + an opaque .pkl."""
    folder.mkdir(parents=True)
    write_json(folder / "dataset.json", {**DJ, "labels": {"background": 0, "a": 1, "b": 2}})
    for case, p in probs.items():
        np.savez_compressed(folder / f"{case}.npz", probabilities=p.astype(np.float32))
        (folder / f"{case}.pkl").write_bytes(b"\x80\x04opaque bytes that are never unpickled")
        if longnet_style:
            write_json(folder / f"{case}.json", _props())
        else:
            write_seg(folder / f"{case}.nii.gz", p.argmax(0))
    return folder


def _probs(rng, winner: np.ndarray) -> np.ndarray:
    p = rng.uniform(0.0, 0.2, (3,) + winner.shape)
    np.put_along_axis(p, winner[None], 0.9, axis=0)
    return p / p.sum(0, keepdims=True)


def test_ensemble_averages_argmaxes_and_keeps_geometry(tmp_path, capsys):
    rng = np.random.default_rng(0)
    shape = (2, 3, 4)
    a = {c: _probs(rng, rng.integers(0, 3, shape)) for c in ("c1", "c2")}
    b = {c: _probs(rng, rng.integers(0, 3, shape)) for c in ("c1", "c2")}
    a["c1"][:, 0, 0, 0], b["c1"][:, 0, 0, 0] = [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]  # tie: the first maximum wins
    fa = _prob_folder(tmp_path / "A", a, longnet_style=True)
    fb = _prob_folder(tmp_path / "B", b, longnet_style=False)
    out = tmp_path / "out"
    assert ensemble_main(["-i", str(fa), str(fb), "-o", str(out), "-np", "1", "--save_npz"]) == 0
    for case in ("c1", "c2"):
        mean = (a[case].astype(np.float32) + b[case].astype(np.float32)) / np.float32(2)
        img = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(img), mean.argmax(0))
        assert np.allclose(img.GetSpacing(), SPACING) and np.allclose(img.GetOrigin(), ORIGIN)
        with np.load(out / f"{case}.npz") as f:
            assert np.allclose(f["probabilities"], mean)
        assert json.loads((out / f"{case}.json").read_text())["sitk_stuff"]["origin"] == list(ORIGIN)
        assert (out / f"{case}.pkl").read_bytes() == (fa / f"{case}.pkl").read_bytes()  # byte copy, not unpickled
    assert read(out / "c1.nii.gz")[0, 0, 0] == 0
    assert (out / "dataset.json").is_file() and not (out / "plans.json").exists()
    # nnU-Net-style first folder: geometry from the label map next to the .npz
    out2 = tmp_path / "out2"
    assert ensemble_main(["-i", str(fb), str(fa), "-o", str(out2), "-np", "1"]) == 0
    img = sitk.ReadImage(str(out2 / "c2.nii.gz"))
    assert np.allclose(img.GetOrigin(), ORIGIN) and not (out2 / "c2.npz").exists()


def test_ensemble_bad_inputs_exit_1_with_one_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    shape = (2, 3, 4)
    fa = _prob_folder(tmp_path / "A", {c: _probs(rng, rng.integers(0, 3, shape)) for c in ("c1", "c2")}, True)
    fb = _prob_folder(tmp_path / "B", {"c1": _probs(rng, rng.integers(0, 3, shape))}, True)
    assert ensemble_main(["-i", str(fa), str(fb), "-o", str(tmp_path / "o1")]) == 1
    assert_one_error_line(capsys, "case set differs", "c2")
    assert ensemble_main(["-i", str(fa), str(tmp_path / "missing"), "-o", str(tmp_path / "o2")]) == 1
    assert_one_error_line(capsys, "missing", "folder not found")
    (fb / "c1.json").unlink()  # no properties and no label map: nothing to take the geometry from
    assert ensemble_main(["-i", str(fb), str(fb), "-o", str(tmp_path / "o3")]) == 1
    assert_one_error_line(capsys, "no geometry for case c1", "never unpickled")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# -- determine / apply postprocessing ------------------------------------------------------------------------

SHAPE = (6, 12, 12)


def _pp_case(folder_pred: Path, folder_ref: Path, case: str, ref: np.ndarray, pred: np.ndarray) -> None:
    write_seg(folder_ref / f"{case}.nii.gz", ref)
    write_seg(folder_pred / f"{case}.nii.gz", pred)


def _pp_setup(tmp_path: Path, scenario: str) -> tuple[Path, Path]:
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir(), ref_dir.mkdir()
    write_json(pred_dir / "dataset.json", DJ)
    for i, case in enumerate(("c1", "c2")):
        ref = np.zeros(SHAPE, np.uint8)
        if scenario == "touching":  # labels 1 and 2 form one joint-foreground component
            ref[1:4, 1:5, 1:4] = 1
            ref[1:4, 1:5, 4:6] = 2
        else:  # separate blobs: label 2 is the smaller joint-foreground component
            ref[1:4, 1:5, 1:5] = 1
            ref[1:3, 8:10, 8:10] = 2
        pred = ref.copy()
        pred[5, 11, 11 - i] = 1  # a stray voxel of label 1 far from everything
        _pp_case(pred_dir, ref_dir, case, ref, pred)
    return pred_dir, ref_dir


def _plain_pickle(path: Path) -> bool:
    """True if the pickle holds only plain data (no global lookups, no calls): checked without loading it."""
    ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    return not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def test_determine_accepts_joint_foreground_when_nothing_gets_worse(tmp_path, capsys):
    pred, ref = _pp_setup(tmp_path, "touching")
    assert main_determine(["-i", str(pred), "-ref", str(ref), "-np", "1"]) == 0
    pp = json.loads((pred / "postprocessing.json").read_text())
    assert pp["postprocessing_fns"] == ["remove_all_but_largest_component_from_segmentation"]
    assert pp["postprocessing_kwargs"] == [{"labels_or_regions": [1, 2]}]  # per-label steps change nothing
    assert set(pp) == {"input_folder", "postprocessed", "postprocessing_fns", "postprocessing_kwargs"}
    assert pp["postprocessed"]["mean"]["1"]["Dice"] == 1.0 and pp["input_folder"]["mean"]["1"]["Dice"] < 1.0
    assert _plain_pickle(pred / "postprocessing.pkl")
    assert b"remove_all_but_largest_component_from_segmentation" in (pred / "postprocessing.pkl").read_bytes()
    post = pred / "postprocessed"
    assert sorted(p.name for p in post.iterdir()) == ["c1.nii.gz", "c2.nii.gz", "summary.json"]
    assert np.array_equal(read(post / "c1.nii.gz"), read(ref / "c1.nii.gz"))
    assert not [p for p in pred.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert (pred / "summary.json").is_file()  # the baseline was computed first
    # apply reproduces determine's output
    out = tmp_path / "applied"
    assert main_apply(["-i", str(pred), "-o", str(out), "-pp_pkl_file", str(pred / "postprocessing.pkl"),
                       "-np", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["c1.nii.gz", "c2.nii.gz"]  # nothing else copied
    for case in ("c1", "c2"):
        img = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(img), read(post / f"{case}.nii.gz"))
        assert np.allclose(img.GetOrigin(), ORIGIN)


def test_determine_rejects_joint_foreground_that_removes_a_label_and_takes_per_label_step(tmp_path):
    pred, ref = _pp_setup(tmp_path, "separate")
    assert main_determine(["-i", str(pred), "-ref", str(ref), "-np", "1", "--remove_postprocessed"]) == 0
    pp = json.loads((pred / "postprocessing.json").read_text())
    # joint foreground would delete label 2 (the smaller component): rejected; label 1 alone: accepted
    assert pp["postprocessing_kwargs"] == [{"labels_or_regions": 1}]
    assert not (pred / "postprocessed").exists()
    out = tmp_path / "applied"
    assert main_apply(["-i", str(pred), "-o", str(out), "-pp_file", str(pred / "postprocessing.json")]) == 0
    assert np.array_equal(read(out / "c1.nii.gz"), read(ref / "c1.nii.gz"))


def test_determine_needs_strict_improvement_ties_are_kept(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir(), ref_dir.mkdir()
    write_json(pred_dir / "dataset.json", {**DJ, "labels": {"background": 0, "a": 1}})
    ref = np.zeros(SHAPE, np.uint8)
    ref[0:2, 0:2, 0:2] = 1
    pred = ref.copy()
    pred[4:6, 9:11, 9:11] = 1  # as large as the true blob: both are kept, Dice unchanged, step rejected
    _pp_case(pred_dir, ref_dir, "c1", ref, pred)
    assert main_determine(["-i", str(pred_dir), "-ref", str(ref_dir), "-np", "1"]) == 0
    pp = json.loads((pred_dir / "postprocessing.json").read_text())
    assert pp["postprocessing_fns"] == [] and pp["postprocessing_kwargs"] == []
    assert np.array_equal(read(pred_dir / "postprocessed" / "c1.nii.gz"), pred)


def test_postprocessing_bad_inputs_exit_1_with_one_line(tmp_path, capsys):
    pred, ref = _pp_setup(tmp_path, "touching")
    assert main_determine(["-i", str(pred), "-ref", str(tmp_path / "nope")]) == 1
    assert_one_error_line(capsys, "nope", "not found")
    (tmp_path / "other").mkdir()
    assert main_determine(["-i", str(tmp_path / "other"), "-ref", str(ref)]) == 1
    assert_one_error_line(capsys, "dataset.json not found")
    lone_pkl = tmp_path / "lone" / "postprocessing.pkl"
    lone_pkl.parent.mkdir()
    lone_pkl.write_bytes(b"\x80\x04N.")
    assert main_apply(["-i", str(pred), "-o", str(tmp_path / "o"), "-pp_pkl_file", str(lone_pkl)]) == 1
    assert_one_error_line(capsys, "never loaded", "postprocessing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"postprocessing_fns": ["os.system"], "postprocessing_kwargs": [{}]}))
    assert main_apply(["-i", str(pred), "-o", str(tmp_path / "o"), "-pp_file", str(bad)]) == 1
    assert_one_error_line(capsys, "unknown postprocessing function")
    assert not (tmp_path / "o").exists()


# -- evaluation in nnU-Net's schema ---------------------------------------------------------------------------

def test_evaluate_simple_writes_nnunet_schema(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    ref = np.zeros(SHAPE, np.uint8)
    ref[0:2, 0:4, 0:4] = 1
    ref[3, 5, 5] = 3  # ignore label
    p = np.zeros(SHAPE, np.uint8)
    p[0:2, 0:4, 0:2] = 1
    p[3, 5, 5] = 1  # under the ignore label: not counted
    write_seg(gt / "b.nii.gz", ref), write_seg(pred / "b.nii.gz", p)
    write_seg(gt / "a.nii.gz", ref), write_seg(pred / "a.nii.gz", ref)
    assert main_simple([str(gt), str(pred), "-l", "1", "2", "-il", "3", "-np", "1"]) == 0
    text = (pred / "summary.json").read_text()
    s = json.loads(text)
    assert list(s) == ["foreground_mean", "mean", "metric_per_case"]  # sorted, nothing beyond nnU-Net's keys
    case_b = s["metric_per_case"][1]
    assert [Path(c["prediction_file"]).name for c in s["metric_per_case"]] == ["a.nii.gz", "b.nii.gz"]
    assert list(case_b) == ["metrics", "prediction_file", "reference_file"]
    assert list(case_b["metrics"]["1"]) == ["Dice", "FN", "FP", "IoU", "TN", "TP", "n_pred", "n_ref"]
    assert case_b["metrics"]["1"]["TP"] == 16 and case_b["metrics"]["1"]["FP"] == 0
    assert case_b["metrics"]["1"]["TN"] == int(np.prod(SHAPE)) - 1 - 32
    assert '"Dice": NaN' in text and math.isnan(s["mean"]["2"]["Dice"])  # label 2 is in neither
    assert math.isnan(s["foreground_mean"]["Dice"])  # a plain mean over the labels: NaN propagates
    assert s["mean"]["1"]["Dice"] == pytest.approx((1.0 + 2 * 16 / (32 + 16)) / 2)
    if REFERENCE_SUMMARY.is_file():  # same keys as nnU-Net's own summary.json
        nn = json.loads(REFERENCE_SUMMARY.read_text())
        assert list(nn) == list(s) and list(nn["metric_per_case"][0]) == list(case_b)
        assert list(nn["mean"]["1"]) == list(s["mean"]["1"]) == list(nn["foreground_mean"])
    # regions through a dataset.json: keys "(1, 2)"
    dj = tmp_path / "dataset.json"
    # the references hold the ignore label 3: a dataset.json must declare it (undeclared values are refused)
    write_json(dj, {"labels": {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3},
                    "regions_class_order": [1, 2],
                    "file_ending": ".nii.gz", "channel_names": {"0": "x"}, "numTraining": 2})
    plans = tmp_path / "plans.json"
    write_json(plans, {"image_reader_writer": "SimpleITKIO"})
    out = tmp_path / "regions.json"
    assert main_folder([str(gt), str(pred), "-djfile", str(dj), "-pfile", str(plans), "-o", str(out),
                        "-np", "1"]) == 0
    assert list(json.loads(out.read_text())["mean"]) == ["(1, 2)", "2"]
    (pred / "a.nii.gz").unlink()
    assert main_simple([str(gt), str(pred), "-l", "1", "-np", "1"]) == 1
    assert_one_error_line(capsys, "no prediction", "--chill")
    assert main_simple([str(gt), str(pred), "-l", "1", "-np", "1", "--chill"]) == 0


def test_summary_matches_nnunet_reference_exactly(tmp_path):
    """nnU-Net's own validation summary: its per-case metrics aggregate to its means, and evaluating nnU-Net's
    predictions of six of those cases reproduces their per-case metrics bit for bit."""
    from longnet.evaluation.segmentation import aggregate

    if not REFERENCE_SUMMARY.is_file():
        pytest.skip("nnU-Net reference outputs not available")
    ref = json.loads(REFERENCE_SUMMARY.read_text())
    agg = aggregate(ref["metric_per_case"], with_median=False)
    assert agg == {"foreground_mean": ref["foreground_mean"], "mean": ref["mean"]}
    labels = SHARED_DATA / "Task04_Hippocampus" / "labelsTr"
    preds = REFERENCE_SUMMARY.parents[4] / "predictions_tta_2d"
    if not labels.is_dir() or not preds.is_dir():
        pytest.skip("shared Hippocampus data not available")
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in preds.glob("*.nii.gz"):
        (gt / p.name).write_bytes((labels / p.name).read_bytes())
    out = tmp_path / "summary.json"
    assert main_simple([str(gt), str(preds), "-l", "1", "2", "-o", str(out), "-np", "1"]) == 0
    by_name = {Path(c["prediction_file"]).name: c["metrics"] for c in ref["metric_per_case"]}
    ours = json.loads(out.read_text())["metric_per_case"]
    assert len(ours) == 6 and all(c["metrics"] == by_name[Path(c["prediction_file"]).name] for c in ours)
