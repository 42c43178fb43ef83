"""`-pl nnUNetPlannerCPU`: the default plan's spacing, patch and topology with narrow stages and a batch of at most
two, as its own plans (nnUNetPlansCPU) that share the default plans' preprocessed arrays; trains with `-p`."""
from __future__ import annotations

import json

import torch

from tiny_seg_dataset import set_env


def test_cpu_plans_next_to_the_default_plans(tmp_path, monkeypatch):
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
    from longnet.cli.train import main as train_main
    from longnet.demo.synthetic import generate_demo_dataset

    set_env(monkeypatch, tmp_path)
    torch.set_num_threads(1)
    generate_demo_dataset(tmp_path / "raw", 6, 1, (24, 32, 24), seed=4, min_visits=2, max_visits=2)
    assert main_plan_and_preprocess(["-d", "990", "-c", "3d_fullres", "-np", "1"]) == 0
    assert main_plan_and_preprocess(["-d", "990", "-c", "3d_fullres", "-np", "1", "-pl", "nnUNetPlannerCPU"]) == 0
    pre = next((tmp_path / "preprocessed").glob("Dataset990_*"))
    default = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
    cpu = json.loads((pre / "nnUNetPlansCPU.json").read_text())["configurations"]["3d_fullres"]
    assert cpu["patch_size"] == default["patch_size"] and cpu["spacing"] == default["spacing"]
    assert cpu["data_identifier"] == default["data_identifier"] == "nnUNetPlans_3d_fullres"
    n = len(default["architecture"]["arch_kwargs"]["features_per_stage"])
    assert cpu["architecture"]["arch_kwargs"]["features_per_stage"] == [min(8 * 2 ** i, 128) for i in range(n)]
    assert cpu["batch_size"] == min(2, default["batch_size"])
    assert not (pre / "nnUNetPlansCPU_3d_fullres").exists()  # the arrays are shared, not written twice
    assert train_main(["990", "3d_fullres", "all", "-p", "nnUNetPlansCPU", "--epochs", "1", "--iters-per-epoch", "2",
                       "--val-iters", "1", "--disable-final-validation", "-device", "cpu"]) == 0
    ckpt = torch.load(next((tmp_path / "results").rglob("nnUNetTrainer__nnUNetPlansCPU__3d_fullres/fold_all/"
                                                        "checkpoint_final.pth")), weights_only=True)
    assert ckpt["network_weights"]["encoder.stages.0.0.convs.0.conv.weight"].shape[0] == 8


def test_replanning_with_another_alignment_warns(tmp_path, monkeypatch, capsys):
    """Planning the same plans name again with another --align replaces the plans: said, not silent."""
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
    from longnet.demo.synthetic import generate_demo_dataset

    set_env(monkeypatch, tmp_path)
    generate_demo_dataset(tmp_path / "raw", 3, 1, (12, 16, 14), seed=4, min_visits=2, max_visits=2)
    plan = ["-d", "990", "-c", "3d_fullres", "-pl", "nnUNetPlannerCPU", "--no_pp"]
    assert main_plan_and_preprocess(plan + ["--align", "rigid"]) == 0
    assert main_plan_and_preprocess(plan + ["--align", "rigid"]) == 0
    assert "was planned with --align" not in capsys.readouterr().err  # same mode: nothing to say
    assert main_plan_and_preprocess(plan) == 0
    err = capsys.readouterr().err
    assert "nnUNetPlansCPU.json was planned with --align rigid; it now holds plans with --align none" in err
    assert "-overwrite_plans_name" in err
    from longnet.cli.train import main as train_main

    assert train_main(["990", "3d_fullres", "all", "-device", "cpu"]) == 1  # default plans never planned here
    assert "plans here: nnUNetPlansCPU (pass one with -p)" in capsys.readouterr().err
