"""Lesion-wise detection, new-lesion detection and surface metrics (longnet/evaluation/lesions.py) on
hand-built lesion maps with known counts, and the `longnet_evaluate --patients` block that reports them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.errors import LongnetError
from longnet.evaluation.lesions import (detection_counts, detection_scores, lesion_summary, new_lesion_counts,
                                        new_lesion_scores, resolve_lesion_target, surface_metrics, visit_metrics)

SHAPE = (12, 20, 20)


def _box(mask: np.ndarray, lo, size=2, value=True) -> np.ndarray:
    mask[tuple(slice(a, a + size) for a in lo)] = value
    return mask


def _empty() -> np.ndarray:
    return np.zeros(SHAPE, bool)


def test_detection_counts_tp_fp_fn():
    ref = _box(_box(_box(_empty(), (1, 1, 1)), (1, 10, 10)), (8, 15, 2))      # lesions A, B, C
    pred = _box(_box(_box(_empty(), (2, 1, 1)), (1, 11, 10)), (8, 2, 15))     # half of A, half of B, one FP
    c = detection_counts(pred, ref)
    assert c == {"n_pred": 3, "n_ref": 3, "TP": 2, "FP": 1, "detected_ref": 2, "FN": 1}
    s = detection_scores(c)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["F1"] == pytest.approx(2 / 3)


def test_one_prediction_over_two_lesions_and_full_connectivity():
    ref = _box(_box(_empty(), (1, 1, 1)), (1, 1, 4))
    pred = _empty()
    pred[1:3, 1:3, 1:6] = True                                       # one blob over both lesions and their gap
    assert detection_counts(pred, ref) == {"n_pred": 1, "n_ref": 2, "TP": 1, "FP": 0, "detected_ref": 2, "FN": 0}
    diagonal = _empty()
    diagonal[2, 2, 2] = diagonal[3, 3, 3] = True                     # corner-touching voxels: one lesion
    assert detection_counts(diagonal, diagonal)["n_ref"] == 1


def test_matching_needs_real_overlap():
    ref = _box(_box(_box(_empty(), (1, 1, 1)), (1, 10, 10)), (8, 15, 2))
    whole = np.ones(SHAPE, bool)                                     # "everything is lesion" detects nothing
    c = detection_counts(whole, ref)
    assert c == {"n_pred": 1, "n_ref": 3, "TP": 0, "FP": 1, "detected_ref": 0, "FN": 3}
    assert detection_scores(c)["F1"] == 0.0
    touching = _box(_empty(), (2, 2, 2))                             # one corner voxel of 8 on lesion A
    c = detection_counts(touching, _box(_empty(), (1, 1, 1)))
    assert c["TP"] == 0 and c["FN"] == 1
    inside = _empty()
    inside[4, 4, 4] = True                                           # one voxel inside a 4³ lesion: 1/64 < 10 %
    c = detection_counts(inside, _box(_empty(), (3, 3, 3), size=4))
    assert c["TP"] == 1 and c["detected_ref"] == 0 and c["FN"] == 1
    c = new_lesion_counts(ref, ref | _box(_empty(), (5, 5, 5)), whole, whole)
    assert c["n_new_ref"] == 1 and c["new_detected"] == 0 and c["n_new_pred"] == 0


def test_detection_scores_edge_cases():
    none = detection_counts(_empty(), _empty())
    assert math.isnan(detection_scores(none)["F1"])
    missed = detection_counts(_empty(), _box(_empty(), (3, 3, 3)))
    assert detection_scores(missed)["F1"] == 0.0 and detection_scores(missed)["recall"] == 0.0
    spurious = detection_counts(_box(_empty(), (3, 3, 3)), _empty())
    assert detection_scores(spurious)["F1"] == 0.0 and math.isnan(detection_scores(spurious)["recall"])


def test_new_lesion_counts():
    ref_prev = _box(_empty(), (2, 2, 2))
    ref_cur = _box(_box(_box(_empty(), (2, 2, 2), size=3), (2, 12, 12)), (8, 2, 14))   # A grown, new N1, new N2
    pred_prev = _box(_empty(), (2, 2, 2))
    pred_cur = _box(_box(_box(_empty(), (2, 2, 2), size=3), (3, 12, 12)), (9, 17, 17))  # A, N1 found, spurious
    c = new_lesion_counts(ref_prev, ref_cur, pred_prev, pred_cur)
    assert c == {"n_new_ref": 2, "new_detected": 1, "n_new_pred": 2, "new_pred_correct": 1}
    s = new_lesion_scores(c)
    assert s["new_lesion_recall"] == 0.5 and s["new_lesion_precision"] == 0.5 and s["new_lesion_F1"] == 0.5
    # a lesion already present (even if the prediction only now finds it) is not new
    c2 = new_lesion_counts(ref_prev, ref_prev, _empty(), ref_prev)
    assert c2["n_new_ref"] == 0 and c2["n_new_pred"] == 1 and c2["new_pred_correct"] == 0


def test_surface_and_volume_metrics():
    ref = _box(_empty(), (3, 5, 5), size=4)
    same = surface_metrics(ref, ref, (1.0, 1.0, 1.0))
    assert same["NSD"] == pytest.approx(1.0) and same["ASSD"] == pytest.approx(0.0) and same["HD95"] == 0.0
    shifted = np.roll(ref, 3, axis=2)
    far = surface_metrics(shifted, ref, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert 0.0 < far["NSD"] < 1.0 and far["ASSD"] > 0.5
    assert surface_metrics(_empty(), ref, None)["NSD"] == 0.0
    assert math.isnan(surface_metrics(_empty(), _empty(), None)["NSD"])
    m = visit_metrics(_box(_empty(), (3, 5, 5), size=2), ref, (2.0, 1.0, 1.0))
    assert m["volume_ref"] == 128.0 and m["volume_pred"] == 16.0 and m["volume_error"] == -112.0
    assert m["relative_volume_error"] == pytest.approx(112 / 128) and m["TP"] == 1 and m["FN"] == 0


def test_resolve_lesion_target():
    dj = {"labels": {"background": 0, "ventricles": 1, "lesion": 2}}
    assert resolve_lesion_target(dj) == ("lesion", (2,))
    assert resolve_lesion_target(dj, 1) == ("ventricles", (1,))
    assert resolve_lesion_target({"labels": {"background": 0, "a": 1, "b": 2}}) == ("foreground", (1, 2))
    assert resolve_lesion_target({"labels": {"background": 0, "WM lesions": [1, 2], "x": 2}}) == \
        ("WM lesions", (1, 2))
    with pytest.raises(LongnetError, match="--lesion-label 7"):
        resolve_lesion_target(dj, 7)


def _write_case(folder, case, seg, origin=(0.0, 0.0, 0.0)):
    write_image(folder / f"{case}.nii.gz", seg.astype(np.uint8), spacing=(1.0, 1.0, 1.0), origin=origin)


def test_lesion_summary_per_visit_patient_overall(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    lab = lambda m: m.astype(np.uint8) * 2  # noqa: E731  label 2 = lesion
    v0_ref = _box(_empty(), (2, 2, 2))
    v1_ref = _box(_box(_empty(), (2, 2, 2), size=3), (6, 12, 12))      # grows + one new lesion
    v0_pred = v0_ref.copy()
    v1_pred = _box(_empty(), (2, 2, 2), size=3)                       # misses the new one
    vent = np.zeros(SHAPE, np.uint8)
    vent[10:12, 0:3, 0:3] = 1                                          # another label, ignored
    for case, r, p in (("s_v0", v0_ref, v0_pred), ("s_v1", v1_ref, v1_pred)):
        _write_case(gt, case, np.maximum(lab(r), vent))
        _write_case(pred, case, lab(p))
    _write_case(gt, "t_v0", lab(v0_ref))
    _write_case(pred, "t_v0", lab(_box(_empty(), (8, 15, 15))))       # a second subject: one FP, one FN
    s = lesion_summary(gt, pred, {"s": ["s_v0", "s_v1"], "t": ["t_v0"]}, (2,), ".nii.gz")
    assert s["per_visit"]["s_v1"]["FN"] == 1 and s["per_visit"]["s_v1"]["TP"] == 1
    assert s["per_visit"]["s_v0"]["Dice"] == 1.0
    ps = s["per_patient"]["s"]
    assert ps["n_new_ref"] == 1 and ps["new_detected"] == 0 and ps["new_lesion_recall"] == 0.0
    assert ps["pairs"][0]["from"] == "s_v0" and ps["pairs"][0]["ASPC_ref"] > ps["pairs"][0]["ASPC_pred"]
    o = s["overall"]
    assert (o["n_ref"], o["n_pred"], o["TP"], o["FP"], o["FN"]) == (4, 3, 2, 1, 2)
    assert o["F1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)) and o["num_pairs"] == 1
    # visits on different grids are compared in physical space
    _write_case(gt, "u_v0", lab(v0_ref), origin=(0.0, 0.0, 0.0))
    _write_case(pred, "u_v0", lab(v0_ref), origin=(0.0, 0.0, 0.0))
    shifted = np.roll(v0_ref, 1, axis=0)                               # same anatomy, origin moved by one voxel
    _write_case(gt, "u_v1", lab(shifted), origin=(0.0, 0.0, -1.0))
    _write_case(pred, "u_v1", lab(shifted), origin=(0.0, 0.0, -1.0))
    u = lesion_summary(gt, pred, {"u": ["u_v0", "u_v1"]}, (2,), ".nii.gz")["per_patient"]["u"]
    assert u["n_new_ref"] == 0 and u["n_new_pred"] == 0


def test_evaluate_cli_adds_lesions(tmp_path):
    from longnet.cli.evaluate import main

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    ref0, ref1 = _box(_empty(), (2, 2, 2)), _box(_box(_empty(), (2, 2, 2)), (7, 12, 12))
    for case, r in (("a_v0", ref0), ("a_v1", ref1)):
        _write_case(gt, case, r.astype(np.uint8) * 2)
        _write_case(pred, case, r.astype(np.uint8) * 2)
    (pred / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "ventricles": 1, "lesion": 2},
                                                   "file_ending": ".nii.gz"}))
    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps({"a": ["a_v0", "a_v1"]}))
    assert main([str(gt), str(pred), "--patients", str(patients), "--nsd-tolerance", "2"]) == 0
    s = json.loads((pred / "summary.json").read_text())["lesions"]
    assert s["label"] == "lesion" and s["tolerance_mm"] == 2.0
    assert s["overall"]["F1"] == 1.0 and s["overall"]["new_lesion_recall"] == 1.0
    assert s["overall"]["NSD"] == pytest.approx(1.0) and s["overall"]["ASPC_abs_difference"] == 0.0
    assert main([str(gt), str(pred), "--patients", str(patients), "--lesion-label", "9"]) != 0
