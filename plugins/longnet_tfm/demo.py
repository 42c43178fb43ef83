"""Demo recipe of TFMTrainer: forecast each test subject's last visit, NRMSE of TFM next to the LCI baseline.

TFM needs visits in voxel correspondence, so the recipe first plans and preprocesses the demo dataset again
under its own plans name with rigid intra-subject alignment (`-overwrite_plans_name nnUNetPlansTFMAligned
--align rigid`; the fingerprint is reused, the other recipes' plans stay untouched). Then: train (fold all,
the small demo U-Net of bench/tfm_demo.py), `longnet_predict --with-lci --with-context-mean`,
`longnet_evaluate --task forecast`. bench/tfm_demo.py is the full benchmark of the same pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

PLANS, CONFIG = "nnUNetPlansTFMAligned", "3d_fullres"
TRAINER = "TFMTrainer"
#: Small U-Net trained on crops: the demo's CPU budget (bench/tfm_demo.py uses the same).
DEMO_NET = ["--base-channels", "8", "--channel-mult", "1,2,2", "--attention-levels", "none", "--no-mid-attention",
            "--downsample", "all", "--patch-size", "16,24,24", "--batch-size", "4", "--lr", "2e-3"]


def run_demo(ctx):
    """Recipe row: test NRMSE of TFM vs LCI (side-by-side table with PSNR/SSIM in the evaluate output)."""
    import torch

    from longnet.cli.demo import RecipeResult, call_command

    s = ctx.settings
    quick = s.epochs * s.iters_per_epoch < 30
    epochs, iters = (2, 5) if quick else (10, 20)
    raw = Path(ctx.raw_folder)
    call_command("plan_and_preprocess", "main_plan_and_preprocess",
                 ["-d", str(ctx.dataset_id), "-c", CONFIG, "-np", "2", "-overwrite_plans_name", PLANS,
                  "--align", "rigid"])
    threads = torch.get_num_threads()
    if ctx.device == "cpu":
        torch.set_num_threads(1)  # shared CPU cores: one intra-op thread is several times faster than two
    try:
        call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", TRAINER, "-p", PLANS,
                                       "-device", ctx.device, "--epochs", str(epochs), "--iters-per-epoch",
                                       str(iters), *DEMO_NET])
        pred = Path(ctx.out) / "predictions" / TRAINER
        call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(ctx.dataset_id),
                                         "-c", CONFIG, "-tr", TRAINER, "-p", PLANS, "-f", "all", "-device",
                                         ctx.device, "--patients", str(raw / "patientsTs.json"), "--with-lci"])
    finally:
        torch.set_num_threads(threads)
    call_command("evaluate", "main", [str(pred / "reference"), str(pred), "--task", "forecast"])
    summary = json.loads((pred / "summary.json").read_text())
    overall = summary["side_by_side"]["overall"]
    n = len(json.loads((pred / "forecasts.json").read_text())["forecasts"])
    return RecipeResult(f"forecast images of {n} test subjects (+ LCI, reference)", "test NRMSE (lower is better)",
                        overall["prediction"]["NRMSE"], overall["LCI"]["NRMSE"], "LCI", [], pred)
