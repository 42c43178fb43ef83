"""STCS on aligned visit pairs and `longnet_evaluate --task segmentation --patients` (ASPC of prediction and
reference side by side, STCS only for pairs on one grid)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.cli.evaluate import main as evaluate_main
from longnet.evaluation.longitudinal import consecutive_stcs


def _box(shape, lo, size, label=1):
    seg = np.zeros(shape, np.uint8)
    seg[tuple(slice(a, a + size) for a in lo)] = label
    return seg


def test_consecutive_stcs_hand_values():
    a = _box((10, 10, 10), (2, 2, 2), 4)           # 64 voxels
    b = _box((10, 10, 10), (2, 2, 4), 4)           # shifted 2 along x: overlap 32 -> Dice 0.5
    segs = {"v1": a, "v2": a, "v3": b, "w1": a, "w2": a[:-1]}
    out = consecutive_stcs(segs, {"S": ["v1", "v2", "v3"], "T": ["w1", "w2"]}, [1], {"v1": a, "v2": b})
    pairs = out["per_subject"]["S"]
    assert pairs[0]["STCS_pred"] == {"1": 1.0} and pairs[1]["STCS_pred"] == {"1": pytest.approx(0.5)}
    assert pairs[0]["STCS_ref"] == {"1": pytest.approx(0.5)} and "STCS_ref" not in pairs[1]
    assert out["num_pairs"] == 2 and out["mean"]["1"]["STCS_pred"] == pytest.approx(0.75)
    assert [(s["from"], s["to"]) for s in out["skipped"]] == [("w1", "w2")]  # different grids are not compared
    assert math.isnan(consecutive_stcs({"x": a * 0, "y": a * 0}, {"S": ["x", "y"]}, [1])["mean"]["1"]["STCS_pred"])


def test_evaluate_segmentation_with_patients_reports_aspc_and_stcs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shape = (8, 10, 12)
    ref = {"s1_v1": _box(shape, (1, 1, 1), 4), "s1_v2": _box(shape, (1, 1, 1), 5),
           "s2_v1": _box(shape, (2, 2, 2), 3), "s2_v2": _box(shape, (2, 2, 2), 3)}
    prd = {"s1_v1": _box(shape, (1, 1, 1), 4), "s1_v2": _box(shape, (1, 1, 1), 4),
           "s2_v1": _box(shape, (2, 2, 2), 3), "s2_v2": _box(shape, (2, 2, 3), 3)}
    for case in ref:
        origin = [0.0, 0.0, 5.0] if case == "s2_v2" else None  # s2's visits were not aligned: other grid
        write_image(gt / f"{case}.nii.gz", ref[case], spacing=[1.0, 1.0, 2.0], origin=origin)
        write_image(pred / f"{case}.nii.gz", prd[case], spacing=[1.0, 1.0, 2.0], origin=origin)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1},
                                                       "channel_names": {"0": "T1"}, "file_ending": ".nii.gz",
                                                       "numTraining": 4}))
    (tmp_path / "patients.json").write_text(json.dumps({"s1": ["s1_v1", "s1_v2"], "s2": ["s2_v1", "s2_v2"]}))
    assert evaluate_main([str(gt), str(pred), "-djfile", str(tmp_path / "dataset.json"), "--patients",
                          str(tmp_path / "patients.json"), "--no_hd95"]) == 0
    long = json.loads((pred / "summary.json").read_text())["longitudinal"]
    s1 = long["per_subject"]["s1"][0]["metrics"]["1"]
    assert s1["ASPC_pred"] == 0.0 and s1["ASPC_ref"] == pytest.approx(100 * (125 - 64) / (0.5 * (125 + 64)))
    assert s1["volume_ref_2"] == pytest.approx(125 * 2.0)  # mm³ (spacing 2 along z)
    assert long["per_subject"]["s2"][0]["metrics"]["1"]["ASPC_pred"] == 0.0
    stcs = long["STCS"]
    assert stcs["per_subject"]["s1"][0]["STCS_pred"] == {"1": 1.0}
    assert stcs["per_subject"]["s1"][0]["STCS_ref"] == {"1": pytest.approx(2 * 64 / (64 + 125))}
    assert "s2" not in stcs["per_subject"] and stcs["skipped"][0]["from"] == "s2_v1"
    assert "origin" in stcs["skipped"][0]["reason"]
