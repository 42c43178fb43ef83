"""Demo recipe for STAMP: pretrain briefly, probe `converter` at the demo's 2-year horizon, predict the test
split, evaluate AUROC; the baseline is the same probe on a randomly initialised encoder (same budget)."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from longnet.api import CONFIG, CONVERTER_HORIZON_DAYS, DemoContext, RecipeResult, call_command

TARGET = "converter"
SIZE = ["--preset", "tiny"]


def _probe(ctx: DemoContext, source: list[str], epochs: int, iters: int) -> None:
    call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", "STAMPProbeTrainer", "-device",
                                   ctx.device, "--target", TARGET, "--horizon-days", f"{CONVERTER_HORIZON_DAYS:g}",
                                   "--epochs", str(epochs), "--iters-per-epoch", str(iters), "--batch-size", "16",
                                   *source])


def _predict_and_evaluate(ctx: DemoContext, name: str) -> tuple[float | None, Path]:
    pred_dir = ctx.out / "predictions" / name
    call_command("predict", "main", ["-i", str(ctx.raw_folder / "imagesTs"), "-o", str(pred_dir), "-d",
                                     str(ctx.dataset_id), "-c", CONFIG, "-tr", "STAMPProbeTrainer", "-f", "all",
                                     "-device", ctx.device, "--patients", str(ctx.raw_folder / "patientsTs.json")])
    call_command("evaluate", "main", [str(ctx.raw_folder / "visitsTs.csv"), str(pred_dir), "--task",
                                      "classification", "--target", TARGET])
    auroc = json.loads((pred_dir / "summary.json").read_text())["metrics"].get("AUROC")
    return (float(auroc) if auroc is not None and math.isfinite(auroc) else None), pred_dir


def run_demo(ctx: DemoContext) -> RecipeResult:
    """STAMPTrainer + STAMPProbeTrainer on the demo cohort; metric = test AUROC of `converter` per visit."""
    s = ctx.settings
    call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", "STAMPTrainer", "-device", ctx.device,
                                   "--epochs", str(s.epochs), "--iters-per-epoch", str(s.iters_per_epoch), *SIZE])
    results = Path(os.environ["LONGNET_RESULTS"]) / ctx.dataset_name
    encoder = results / f"STAMPTrainer__nnUNetPlans__{CONFIG}" / "fold_all" / "checkpoint_final.pth"
    probe_folder = results / f"STAMPProbeTrainer__nnUNetPlans__{CONFIG}"
    epochs, iters = max(2, s.epochs), max(5, s.iters_per_epoch // 2)

    _probe(ctx, ["--random-encoder", *SIZE], epochs, iters)  # baseline first; its model folder is then replaced
    baseline, _ = _predict_and_evaluate(ctx, "STAMPProbe_random_encoder")
    shutil.rmtree(probe_folder, ignore_errors=True)
    _probe(ctx, ["--encoder", str(encoder)], epochs, iters)
    value, pred_dir = _predict_and_evaluate(ctx, "STAMPProbeTrainer")

    pictures = [p for p in [probe_folder / "fold_all" / "progress.png",
                            results / f"STAMPTrainer__nnUNetPlans__{CONFIG}" / "fold_all" / "progress.png"]
                if p.is_file()]
    n = sum(1 for _ in open(pred_dir / "predictions.csv")) - 1
    produced = f"{TARGET} probabilities ({n} test visits)"
    if value is None:
        produced += "; AUROC undefined: one class in the test split"
    return RecipeResult(produced, f"AUROC {TARGET}@{CONVERTER_HORIZON_DAYS:g}d", value, baseline,
                        "random encoder", pictures, pred_dir)
