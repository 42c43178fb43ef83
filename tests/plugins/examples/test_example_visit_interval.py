"""The second example plugin (examples/visit_interval_plugin), written only against longnet.api: installed from
its own pyproject, it registers a trainer and an output task, and trains, predicts and evaluates through the
command line like any in-tree method."""
from __future__ import annotations

import csv
import json

import torch


def test_visit_interval_plugin_trains_predicts_evaluates(install_example, tmp_path, monkeypatch, capsys):
    from longnet.cli.evaluate import main as evaluate_main
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
    from longnet.cli.plugins import main as plugins_main
    from longnet.cli.predict import main as predict_main
    from longnet.cli.train import main as train_main
    from longnet.demo.synthetic import generate_demo_dataset
    from tiny_seg_dataset import set_env

    install_example("visit_interval_plugin", "longnet-visit-interval")
    assert plugins_main(["--json"]) == 0
    rows = {(r["group"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("longnet.trainers", "VisitIntervalTrainer")]["package"] == "longnet-visit-interval"
    assert rows[("longnet.tasks", "visit_interval")]["description"] == "days between consecutive visits of a subject"
    assert plugins_main(["--describe", "visit_interval"]) == 0
    assert "writes: intervals.csv" in capsys.readouterr().out
    set_env(monkeypatch, tmp_path)
    torch.set_num_threads(1)
    raw = generate_demo_dataset(tmp_path / "raw", 4, 2, (16, 20, 16), seed=5, min_visits=3, max_visits=3)
    assert main_plan_and_preprocess(["-d", "990", "-c", "3d_fullres", "-np", "1"]) == 0
    assert train_main(["990", "3d_fullres", "all", "-tr", "VisitIntervalTrainer", "--batch-size", "0"]) == 1
    assert "--batch-size must be an integer >= 1, got 0" in capsys.readouterr().err  # its typed options' range
    assert train_main(["990", "3d_fullres", "all", "-tr", "VisitIntervalTrainer", "--epochs", "2",
                       "--iters-per-epoch", "3", "-device", "cpu", "--lr", "2e-3"]) == 0
    assert "epoch 1: train_loss" in capsys.readouterr().out
    ckpt = torch.load(next((tmp_path / "results").rglob("checkpoint_final.pth")), weights_only=True)
    assert ckpt["trainer_options"] == {"lr": 2e-3, "batch_size": 4}
    out = tmp_path / "pred"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "990", "-c", "3d_fullres", "-tr",
                         "VisitIntervalTrainer", "-f", "all", "--patients", str(raw / "patientsTs.json"),
                         "--visits", str(raw / "visitsTs.csv"), "-device", "cpu"]) == 0
    pairs = list(csv.DictReader(open(out / "intervals.csv")))
    subjects = json.loads((raw / "patientsTs.json").read_text())
    assert [(p["case_from"], p["case"]) for p in pairs] == [(a, b) for cs in subjects.values()
                                                            for a, b in zip(cs, cs[1:])]
    assert all(float(p["predicted_days"]) >= 0 for p in pairs)
    assert evaluate_main([str(raw / "visitsTs.csv"), str(out), "--task", "visit_interval"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "visit_interval" and summary["num_pairs"] == len(pairs) == 4
    assert summary["MAE_days"] > 0
    # the example's task is listed by longnet_evaluate, the example of a segmentation variant still trains
    capsys.readouterr()
    assert evaluate_main([str(raw / "visitsTs.csv"), str(tmp_path / "nowhere"), "--task", "visit_interval"]) == 1
    assert "intervals.csv not found" in capsys.readouterr().err
