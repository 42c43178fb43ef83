"""Metrics against hand-computed values (segmentation, longitudinal, image similarity, classification, embeddings)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from longnet.evaluation.classification import classification_metrics
from longnet.evaluation.embedding import mccd, subject_mccd
from longnet.evaluation.image import image_similarity, nrmse, psnr, ssim
from longnet.evaluation.longitudinal import aspc, longitudinal_consistency, stcs, structure_volumes
from longnet.evaluation.segmentation import aggregate, compute_metrics, dice, hd95, iou


def _cube(shape=(20, 20, 20), lo=(5, 5, 5), size=10):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


def test_dice_iou_hand_values():
    a = _cube()
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    b = _cube(lo=(0, 0, 0), size=4)
    c = _cube(lo=(10, 10, 10), size=4)
    assert dice(b, c) == 0.0 and iou(b, c) == 0.0
    # 1D example: A = 4 voxels, B = 6 voxels, overlap 2 -> Dice 4/10, IoU 2/8
    x = np.zeros(20, bool); x[0:4] = True
    y = np.zeros(20, bool); y[2:8] = True
    assert dice(x, y) == pytest.approx(0.4) and iou(x, y) == pytest.approx(0.25)
    assert math.isnan(dice(np.zeros(5, bool), np.zeros(5, bool)))


def test_compute_metrics_counts_ignore_and_nan_mean():
    ref = np.array([0, 1, 1, 2, 2, 3, 3])  # 3 = ignore label
    pred = np.array([1, 1, 0, 2, 1, 2, 1])
    m = compute_metrics(pred, ref, [1, 2], ignore_label=3, compute_hd95=False)
    assert m["1"]["TP"] == 1 and m["1"]["FP"] == 2 and m["1"]["FN"] == 1 and m["1"]["TN"] == 1
    assert m["1"]["n_pred"] == 3 and m["1"]["n_ref"] == 2
    assert m["1"]["Dice"] == pytest.approx(2 / 5)
    assert m["2"]["TP"] == 1 and m["2"]["FN"] == 1 and m["2"]["FP"] == 0
    regions = compute_metrics(pred, ref, [(1, 2)], ignore_label=3, compute_hd95=False)
    assert "(1, 2)" in regions and regions["(1, 2)"]["TP"] == 3
    cases = [{"metrics": {"1": {"Dice": 0.5}}}, {"metrics": {"1": {"Dice": float("nan")}}},
             {"metrics": {"1": {"Dice": 1.0}}}]
    agg = aggregate(cases)
    assert agg["mean"]["1"]["Dice"] == pytest.approx(0.75)
    assert agg["median"]["1"]["Dice"] == pytest.approx(0.75)
    assert agg["foreground_mean"]["Dice"] == pytest.approx(0.75)


def test_hd95_shifted_cube_anisotropic():
    ref = _cube(shape=(24, 20, 20))
    pred = _cube(shape=(24, 20, 20), lo=(7, 5, 5))  # shifted 2 voxels along z
    assert hd95(pred, ref, spacing=(3.0, 1.0, 1.0)) == pytest.approx(6.0)
    pred_x = _cube(shape=(24, 20, 20), lo=(5, 5, 8))  # 3 voxels along x at 0.5 mm
    assert hd95(pred_x, ref, spacing=(3.0, 1.0, 0.5)) == pytest.approx(1.5)
    assert hd95(ref, ref, spacing=(3.0, 1.0, 1.0)) == 0.0
    assert math.isnan(hd95(np.zeros_like(ref), ref))


def test_aspc_and_longitudinal_table():
    assert aspc(10.0, 10.0) == 0.0
    assert aspc(100.0, 120.0) == pytest.approx(100 * 20 / 110)
    assert aspc(120.0, 100.0) == aspc(100.0, 120.0)
    assert math.isnan(aspc(0, 0))
    vp = {"a1": {"1": 100.0}, "a2": {"1": 120.0}, "a3": {"1": 120.0}, "b1": {"1": 50.0}}
    vr = {"a1": {"1": 100.0}, "a2": {"1": 110.0}, "a3": {"1": 110.0}, "b1": {"1": 50.0}}
    out = longitudinal_consistency(vp, vr, {"A": ["a1", "a2", "a3"], "B": ["b1"]})
    assert out["num_pairs"] == 2 and list(out["per_subject"]) == ["A"]
    first = out["per_subject"]["A"][0]["metrics"]["1"]
    assert first["ASPC_pred"] == pytest.approx(100 * 20 / 110) and first["ASPC_ref"] == pytest.approx(100 * 10 / 105)
    assert out["mean"]["1"]["ASPC_pred"] == pytest.approx(0.5 * 100 * 20 / 110)


def test_volumes_and_stcs():
    seg = np.zeros((4, 4, 4), np.uint8)
    seg[0, 0, :2] = 1
    seg[1] = 2
    v = structure_volumes(seg, [1, 2, (1, 2)], spacing=(2.0, 1.0, 0.5))
    assert v == {"1": 2.0, "2": 16.0, "(1, 2)": 18.0}
    s = stcs(seg, seg, [1, 2])
    assert s == {"1": 1.0, "2": 1.0}


def test_image_similarity_hand_values():
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 16)).astype(np.float32)
    assert nrmse(x, x) == 0.0
    assert psnr(x, x) == math.inf
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    y = x + 0.1  # MSE = 0.01 -> PSNR 20 dB, NRMSE 0.1
    assert nrmse(y, x) == pytest.approx(0.1, rel=1e-5)
    assert psnr(y, x) == pytest.approx(20.0, rel=1e-5)
    sim = image_similarity(x * 1000 + 5, x * 1000 + 5)  # normalised with the reference's range
    assert sim["NRMSE"] == pytest.approx(0.0, abs=1e-12) and sim["SSIM"] == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, 1 - x) < 0.5


def test_classification_hand_values():
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["AUROC"] == 1.0 and m["PR_AUC"] == 1.0 and m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
    m = classification_metrics(y, np.array([0.6, 0.2, 0.8, 0.9]))  # one false positive
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["macro_F1"] == pytest.approx((2 / 3 + 0.8) / 2)
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1]])
    m3 = classification_metrics(np.array([0, 1, 2, 0]), probs)
    assert m3["AUROC"] == 1.0 and m3["accuracy"] == 1.0
    assert math.isnan(classification_metrics(np.array([1, 1]), np.array([0.3, 0.9]))["AUROC"])


def test_macro_f1_is_over_the_classes_that_occur():
    """A 3-class problem whose test split never holds class 0: a perfect classifier scores 1, not 2/3; the
    all-classes variant (absent class = F1 0) stays available under its own name."""
    probs = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    m = classification_metrics(np.array([1, 2, 1]), probs)
    assert m["classes_in_targets"] == [1, 2] and m["classes_in_predictions"] == [1, 2] and m["num_classes"] == 3
    assert m["macro_F1"] == 1.0 and m["macro_F1_all_classes"] == pytest.approx(2 / 3)
    wrong = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])  # predicts the absent class once
    m = classification_metrics(np.array([1, 2, 1]), wrong)
    assert m["classes_in_predictions"] == [0, 1, 2] and m["macro_F1"] == pytest.approx((0 + 2 / 3 + 1) / 3)


def test_mccd():
    const = [np.array([1.0, 2.0, 3.0])] * 3
    assert subject_mccd(const) == pytest.approx(0.0, abs=1e-12)
    e = {"a1": np.array([1.0, 0.0]), "a2": np.array([0.0, 1.0]), "a3": np.array([-1.0, 0.0]),
         "b1": np.array([1.0, 1.0]), "b2": np.array([2.0, 2.0]), "c1": np.array([5.0, 1.0])}
    out = mccd(e, {"A": ["a1", "a2", "a3"], "B": ["b1", "b2"], "C": ["c1"]})
    assert out["per_subject"]["A"] == pytest.approx(1.0) and out["per_subject"]["B"] == pytest.approx(0.0)
    assert out["MCCD"] == pytest.approx(0.5) and out["num_subjects"] == 2
