"""STAMP through the command-line entry points on a tiny synthetic cohort (CPU):
pretrain (STAMP and the Siamese-MAE ablation) → probe → longnet_predict → longnet_evaluate --task classification.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from longnet.cli.evaluate import main as evaluate_main
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from longnet.demo.synthetic import generate_demo_dataset

pytestmark = pytest.mark.timeout(400)
DID, NAME = 991, "Dataset991_StampTiny"
TINY = ["--preset", "tiny", "--vit-patch", "8", "-device", "cpu"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """6 training + 3 test subjects of 16×32×32 (both converter classes on each side), planned and preprocessed."""
    root = tmp_path_factory.mktemp("stamp")
    mp = pytest.MonkeyPatch()
    for sub, var in (("raw", "LONGNET_RAW"), ("pre", "LONGNET_PREPROCESSED"), ("res", "LONGNET_RESULTS")):
        (root / sub).mkdir()
        mp.setenv(var, str(root / sub))
    mp.setenv("LONGNET_N_PROC_DA", "0")
    mp.setenv("LONGNET_COMPILE", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    raw = generate_demo_dataset(root / "raw", n_subjects_train=6, n_subjects_test=3, shape=(16, 32, 32), seed=0,
                                max_visits=4, dataset_id=DID, name="StampTiny")
    assert main_plan_and_preprocess(["-d", str(DID), "-c", "3d_fullres", "-np", "1"]) == 0
    yield root, raw
    torch.set_num_threads(threads)
    mp.undo()


def _fold(root, trainer):
    return root / "res" / NAME / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_all"


def test_pretrain_probe_predict_evaluate(cohort, capsys):
    root, raw = cohort
    assert train_main([str(DID), "3d_fullres", "all", "-tr", "STAMPTrainer", "--epochs", "1",
                       "--iters-per-epoch", "2", *TINY]) == 0
    enc = _fold(root, "STAMPTrainer") / "checkpoint_final.pth"
    ckpt = torch.load(enc, weights_only=True)
    cfg = ckpt["extra"]["stamp_config"]
    assert cfg["patch"] == [8, 8, 8] and cfg["img_size"] == [16, 32, 32] and not cfg["deterministic"]
    # Δt window defaults to the training split's range of visit gaps (demo: 60-400 days between visits)
    assert 60 <= cfg["dt_min"] < cfg["dt_max"] <= 3 * 400
    assert json.loads((_fold(root, "STAMPTrainer") / "validation" / "summary.json").read_text())["stamp_config"]

    out = capsys.readouterr().out
    assert "32 tokens (8 visible in the future scan)" in out

    assert train_main([str(DID), "3d_fullres", "all", "-tr", "STAMPProbeTrainer", "--target", "converter",
                       "--horizon-days", "365", "--encoder", str(enc), "--epochs", "2", "--iters-per-epoch", "2",
                       "--batch-size", "4", "-device", "cpu"]) == 0
    probe_ckpt = torch.load(_fold(root, "STAMPProbeTrainer") / "checkpoint_final.pth", weights_only=True)
    w, pw = ckpt["network_weights"], probe_ckpt["network_weights"]
    # frozen encoder: identical weights and the SAME Δt binning as in pretraining
    for k in ("encoder.cls_token", "encoder.blocks.0.attn.qkv.weight", "prior.0.weight", "binning.dt_min",
              "binning.dt_max"):
        assert torch.equal(w[k], pw[f"stamp.{k}"]), k
    assert probe_ckpt["extra"]["target"] == "converter" and probe_ckpt["extra"]["horizon_days"] == 365.0

    pred = root / "pred"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DID), "-c", "3d_fullres",
                         "-tr", "STAMPProbeTrainer", "-f", "all", "-device", "cpu",
                         "--patients", str(raw / "patientsTs.json")]) == 0
    rows = list(csv.DictReader(open(pred / "predictions.csv")))
    patients = json.loads((raw / "patientsTs.json").read_text())
    assert list(rows[0]) == ["case", "subject", "horizon_days", "probability", "predicted_class"]
    assert len(rows) == sum(len(v) for v in patients.values())
    subject_of = {c: s for s, cs in patients.items() for c in cs}
    thr = probe_ckpt["extra"]["threshold"]
    for r in rows:
        p = float(r["probability"])
        assert r["subject"] == subject_of[r["case"]] and float(r["horizon_days"]) == 365.0 and 0 <= p <= 1
        assert int(r["predicted_class"]) == int(p >= thr)

    assert evaluate_main([str(raw / "visitsTs.csv"), str(pred), "--task", "classification"]) == 0
    metrics = json.loads((pred / "summary.json").read_text())["metrics"]
    assert {"AUROC", "PR_AUC", "balanced_accuracy", "F1"} <= set(metrics) and metrics["n"] == len(rows)
    assert np.isfinite(metrics["AUROC"])  # both classes are in this test split

    # pretrained encoders also export embeddings (representation output)
    emb = root / "emb"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(emb), "-d", str(DID), "-c", "3d_fullres",
                         "-tr", "STAMPTrainer", "-f", "all", "-device", "cpu",
                         "--patients", str(raw / "patientsTs.json")]) == 0
    with np.load(emb / "embeddings.npz") as z:
        assert z["embeddings"].shape == (len(rows), 48)


def test_siamese_mae_ablation_and_random_encoder_probe(cohort):
    root, _ = cohort
    assert train_main([str(DID), "3d_fullres", "all", "-tr", "STAMPTrainer", "--deterministic-mae",
                       "--epochs", "1", "--iters-per-epoch", "1", "--min-days", "50", "--max-days", "900",
                       *TINY]) == 0
    ckpt = torch.load(_fold(root, "STAMPTrainer") / "checkpoint_final.pth", weights_only=True)
    assert ckpt["extra"]["variant"] == "siamese_mae" and ckpt["extra"]["stamp_config"]["dt_max"] == 900.0
    assert not any(k.startswith("posterior") for k in ckpt["network_weights"])
    assert train_main([str(DID), "3d_fullres", "all", "-tr", "STAMPProbeTrainer", "--target", "converter",
                       "--horizon-days", "365", "--random-encoder", "--augment", "--epochs", "1",
                       "--iters-per-epoch", "1", "--batch-size", "4", *TINY]) == 0


def test_probe_refuses_missing_target_column(cohort, capsys):
    assert train_main([str(DID), "3d_fullres", "all", "-tr", "STAMPProbeTrainer", "--target", "no_such_column",
                       "--horizon-days", "365", "--random-encoder", *TINY]) == 1
    assert "no_such_column" in capsys.readouterr().err
