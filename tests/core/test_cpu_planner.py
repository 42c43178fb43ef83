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
