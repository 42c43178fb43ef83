"""`longnet_evaluate --task forecast|classification|embedding` on tiny hand-made inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.cli.evaluate import main as evaluate_main


def test_forecast_task(tmp_path):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    a = rng.random((12, 14, 16)).astype(np.float32) * 300
    write_image(gt / "s1_v2_0000.nii.gz", a)  # raw layout with channel suffix
    write_image(pred / "s1_v2.nii.gz", a)
    write_image(gt / "s2_v2.nii.gz", a)
    write_image(pred / "s2_v2.nii.gz", a + 30.0)  # +10% of the range: NRMSE 0.1, PSNR 20 dB
    assert evaluate_main([str(gt), str(pred), "--task", "forecast"]) == 0
    s = json.loads((pred / "summary.json").read_text())
    per = {c["case"]: c["metrics"] for c in s["metric_per_case"]}
    assert per["s1_v2"]["NRMSE"] == 0.0 and per["s1_v2"]["SSIM"] == pytest.approx(1.0, abs=1e-5)
    assert per["s2_v2"]["NRMSE"] == pytest.approx(0.1 * 300 / (a.max() - a.min()), rel=1e-4)
    assert np.isfinite(per["s2_v2"]["PSNR"])


def test_classification_task(tmp_path):
    (tmp_path / "targets.csv").write_text("case,target\na,0\nb,0\nc,1\nd,1\ne,1\n")
    (tmp_path / "predictions.csv").write_text("case,probability\na,0.1\nb,0.4\nc,0.6\nd,0.9\n")
    out = tmp_path / "s.json"
    assert evaluate_main([str(tmp_path / "targets.csv"), str(tmp_path / "predictions.csv"), "--task",
                          "classification", "-o", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["n"] == 4 and m["AUROC"] == 1.0 and m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0


def test_embedding_task(tmp_path, capsys):
    np.savez(tmp_path / "embeddings.npz", cases=np.array(["a1", "a2", "b1", "b2"]),
             embeddings=np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 3.0]]))
    (tmp_path / "patients.json").write_text(json.dumps({"A": ["a1", "a2"], "B": ["b1", "b2"]}))
    assert evaluate_main([str(tmp_path), str(tmp_path), "--task", "embedding", "--patients",
                          str(tmp_path / "patients.json")]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["MCCD"] == pytest.approx(0.5) and s["num_subjects"] == 2
    assert evaluate_main([str(tmp_path / "nope"), str(tmp_path / "nope"), "--task", "embedding"]) == 1
    assert capsys.readouterr().err.startswith("longnet: error:")
