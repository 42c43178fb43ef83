"""TFM end to end through the commands: raw demo data → plan/preprocess → longnet_train (2 epochs) →
longnet_predict (forecast + LCI + reference) → longnet_evaluate --task forecast; and a smoke run on the real
TCIA longitudinal set (2 visits per patient: a context of one), skipped without ../shared/data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from raw_datasets import TCIA, tcia_raw_dataset
from longnet.cli.evaluate import main as evaluate_main
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from longnet.demo.synthetic import generate_demo_dataset
from tiny_seg_dataset import set_env

TINY = ["--tiny", "--batch-size", "2", "--ode-steps", "2", "--n-context", "2", "-device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


def test_train_predict_evaluate_through_the_clis(tmp_path, monkeypatch, capsys):
    set_env(monkeypatch, tmp_path)
    raw = generate_demo_dataset(tmp_path / "raw", 2, 1, (12, 16, 14), seed=1, min_visits=3, max_visits=3)
    assert main_plan_and_preprocess(["-d", "990", "-c", "3d_fullres", "-np", "1"] + ["--align", "rigid"]) == 0
    assert train_main(["990", "3d_fullres", "all", "-tr", "TFMTrainer", "--epochs", "2", "--iters-per-epoch", "1"]
                      + TINY) == 0
    model = next((tmp_path / "results").glob("Dataset990_*/TFMTrainer__nnUNetPlans__3d_fullres"))
    out = tmp_path / "forecast"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(model), "-f", "all",
                         "--patients", str(raw / "patientsTs.json"), "--with-lci", "--with-context-mean",
                         "-device", "cpu"]) == 0
    patients = json.loads((raw / "patientsTs.json").read_text())
    (subject, cases), = patients.items()
    target, last_ctx = cases[-1], cases[-2]
    for folder in (out, out / "lci", out / "reference", out / "context_mean"):
        assert sorted(p.name for p in folder.glob("*.nii.gz")) == [f"{target}_0000.nii.gz", f"{target}_0001.nii.gz"]
    # written in the geometry of the subject's last context visit
    pred = sitk.ReadImage(str(out / f"{target}_0000.nii.gz"))
    ctx = sitk.ReadImage(str(raw / "imagesTs" / f"{last_ctx}_0000.nii.gz"))
    assert pred.GetSize() == ctx.GetSize() and np.allclose(pred.GetSpacing(), ctx.GetSpacing())
    assert np.allclose(pred.GetOrigin(), ctx.GetOrigin()) and np.allclose(pred.GetDirection(), ctx.GetDirection())
    record = json.loads((out / "forecasts.json").read_text())["forecasts"][0]
    assert record["target"] == target and record["context"][-1] == last_ctx and record["geometry_of"] == last_ctx
    capsys.readouterr()
    assert evaluate_main([str(out / "reference"), str(out), "--task", "forecast"]) == 0
    table = capsys.readouterr().out
    assert "LCI" in table and "changed" in table
    s = json.loads((out / "summary.json").read_text())
    side = s["side_by_side"]
    assert set(side["overall"]) == {"prediction", "LCI", "context_mean"}  # both baselines, side by side
    assert {"NRMSE", "PSNR", "SSIM"} <= set(side["overall"]["LCI"]) and "context_mean" in side["changed"]
    assert side["overall"]["context_mean"]["NRMSE"] != side["overall"]["LCI"]["NRMSE"]
    assert np.isfinite(side["overall"]["prediction"]["NRMSE"]) and len(s["metric_per_case"]) == 2
    # a second run reuses the first run's registrations (OUT/alignments) and forecasts the same
    first = sitk.GetArrayFromImage(pred)
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(model), "-f", "all",
                         "--patients", str(raw / "patientsTs.json"), "-device", "cpu"]) == 0
    sources = json.loads((out / "forecasts.json").read_text())["alignment_sources"]
    assert sources == {"preprocessing": 0, "cache": 2, "registered": 0}  # context v0 and the target, onto v1
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{target}_0000.nii.gz")))
    assert np.array_equal(first, again)
    # training subjects: their transforms come from preprocessing, and forecast like a fresh registration
    train_patients = json.loads((raw / "patientsTr.json").read_text())
    (sub_tr, cases_tr), *_ = train_patients.items()
    ptr = tmp_path / "patientsTr_one.json"
    ptr.write_text(json.dumps({sub_tr: cases_tr}))
    shutil.copy(raw / "visitsTr.csv", tmp_path / "visitsTr_one.csv")
    common = ["-i", str(raw / "imagesTr"), "-m", str(model), "-f", "all", "--patients", str(ptr), "--visits",
              str(tmp_path / "visitsTr_one.csv"), "-device", "cpu"]
    assert predict_main(common + ["-o", str(tmp_path / "fc_reused")]) == 0
    sources = json.loads((tmp_path / "fc_reused" / "forecasts.json").read_text())["alignment_sources"]
    assert sources == {"preprocessing": 2, "cache": 0, "registered": 0}
    monkeypatch.setenv("LONGNET_PREPROCESSED", str(tmp_path / "elsewhere"))
    assert predict_main(common + ["-o", str(tmp_path / "fc_registered")]) == 0
    sources = json.loads((tmp_path / "fc_registered" / "forecasts.json").read_text())["alignment_sources"]
    assert sources == {"preprocessing": 0, "cache": 0, "registered": 2}
    reused, registered = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / f"{cases_tr[-1]}_0000.nii.gz")))
                          for d in ("fc_reused", "fc_registered"))
    # two registrations of one pair agree to a fraction of a voxel (the composition itself: test_alignment.py)
    assert np.abs(reused - registered).mean() < 0.05
    # --target-days: forecast the second visit from the first only
    days = {r.split(",")[0]: float(r.split(",")[1]) for r in (raw / "visitsTs.csv").read_text().splitlines()[1:]}
    out2 = tmp_path / "forecast_days"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out2), "-m", str(model), "-f", "all",
                         "--patients", str(raw / "patientsTs.json"), "--target-days", str(days[cases[1]]),
                         "-device", "cpu"]) == 0
    rec = json.loads((out2 / "forecasts.json").read_text())["forecasts"][0]
    assert rec["target"] == cases[1] and [c for c in rec["context"] if c] == [cases[0]]


def _tcia_raw(root: Path) -> Path:
    """Two patients (registration dominates the run time), T1 + tumour mask, days from the manifest."""
    return tcia_raw_dataset(root, "Dataset993_TCIAForecast", subjects=("PGBM-001", "PGBM-003"))


@pytest.mark.skipif(not TCIA.is_dir(), reason="shared data not available")
def test_tcia_two_visits_context_of_one(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    raw = _tcia_raw(tmp_path / "raw")
    assert main_plan_and_preprocess(["-d", "993", "-c", "3d_fullres", "-np", "2"] + ["--align", "rigid"]) == 0
    args = ["993", "3d_fullres", "all", "-tr", "TFMTrainer", "--epochs", "1", "--iters-per-epoch", "1",
            "--patch-size", "8,32,32", "--tiny", "--batch-size", "1", "--n-context", "1", "--ode-steps", "1",
            "-device", "cpu"]
    assert train_main(args) == 0
    model = next((tmp_path / "results").glob("Dataset993_*/TFMTrainer__nnUNetPlans__3d_fullres"))
    out = tmp_path / "forecast"
    patients = tmp_path / "patients_one.json"  # forecast one patient: tp2 from tp1 (a context of one)
    patients.write_text(json.dumps({"PGBM-003": ["PGBM-003_tp1", "PGBM-003_tp2"]}))
    assert predict_main(["-i", str(raw / "imagesTr"), "-o", str(out), "-m", str(model), "-f", "all",
                         "--patients", str(patients), "--visits", str(raw / "visitsTr.csv"), "--with-lci",
                         "-device", "cpu"]) == 0
    for subj in ("PGBM-003",):
        f = out / f"{subj}_tp2_0000.nii.gz"
        assert f.is_file() and (out / "lci" / f.name).is_file() and (out / "reference" / f.name).is_file()
        img, ctx = sitk.ReadImage(str(f)), sitk.ReadImage(str(raw / "imagesTr" / f"{subj}_tp1_0000.nii.gz"))
        assert img.GetSize() == ctx.GetSize()
        assert np.isfinite(sitk.GetArrayViewFromImage(img)).all()
    assert evaluate_main([str(out / "reference"), str(out), "--task", "forecast"]) == 0
