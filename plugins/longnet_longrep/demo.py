"""Demo recipe for LongRep (`longnet.demo_recipes` entry point `LongRep`): short self-supervised pretraining on
the demo cohort's rigidly aligned visit pairs, finetuning with L_cs from that checkpoint, prediction of the test
visits, and test Dice next to the plain nnUNetTrainer row trained on the same labels and schedule (random init)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from longnet.api import (CONFIG, DemoContext, RecipeResult, aligned_plans, call_command, find_progress_png,
    foreground_dice_from_summary)

PRETRAINER, FINETUNER = "LongRepPretrainer", "LongRepFinetuner"


def _aspc(summary_file: Path) -> tuple[float | None, float | None]:
    """Mean over labels of the predicted and reference ASPC between consecutive test visits."""
    try:
        mean = json.loads(summary_file.read_text())["longitudinal"]["mean"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    pred = [v["ASPC_pred"] for v in mean.values() if v.get("ASPC_pred") == v.get("ASPC_pred")]
    ref = [v["ASPC_ref"] for v in mean.values() if v.get("ASPC_ref") == v.get("ASPC_ref")]
    return (sum(pred) / len(pred) if pred else None), (sum(ref) / len(ref) if ref else None)


def run_demo(ctx: DemoContext) -> RecipeResult:
    """Pretrain (one epoch) → finetune (two epochs fewer than the demo's schedule; every step has a labelled batch
    and a pair batch for L_cs, so it costs about the time of the full schedule) → predict → evaluate.
    With L_cs on alternate steps instead, half the steps would be unlabelled: 0.28 Dice at this budget."""
    s = ctx.settings
    dataset, device = str(ctx.dataset_id), ctx.device
    plans = aligned_plans(ctx)  # pairs must be in voxel correspondence (rigid intra-subject alignment)
    call_command("train", "main", [dataset, CONFIG, "all", "-tr", PRETRAINER, "-p", plans, "-device", device,
                                   "--epochs", "1", "--iters-per-epoch", str(s.iters_per_epoch),
                                   "--proj-width", "128", "--num-patches", "64", "--val-iters", str(s.val_iters)])
    results = Path(os.environ["LONGNET_RESULTS"]) / ctx.dataset_name
    ckpt = results / f"{PRETRAINER}__{plans}__{CONFIG}" / "fold_all" / "checkpoint_final.pth"
    call_command("train", "main", [dataset, CONFIG, "all", "-tr", FINETUNER, "-p", plans, "-device", device,
                                   "--epochs", str(max(1, s.epochs - 2)), "--iters-per-epoch", str(s.iters_per_epoch),
                                   "--pretrained-weights", str(ckpt), "--optimizer", "sgd", "--cs-mode", "sum",
                                   "--val-iters", str(s.val_iters), "--disable-final-validation"])
    pred_dir = ctx.out / "predictions" / FINETUNER
    patients = str(ctx.raw_folder / "patientsTs.json")
    call_command("predict", "main", ["-i", str(ctx.raw_folder / "imagesTs"), "-o", str(pred_dir), "-d", dataset,
                                     "-c", CONFIG, "-tr", FINETUNER, "-p", plans, "-f", "all", "-device", device,
                                     "--patients", patients] + ([] if s.tta else ["--disable_tta"]))
    call_command("evaluate", "main", [str(ctx.raw_folder / "labelsTs"), str(pred_dir), "-d", dataset,
                                      "--patients", patients])
    summary = pred_dir / "summary.json"
    dice = foreground_dice_from_summary(summary)
    aspc_pred, aspc_ref = _aspc(summary)
    base = ctx.results.get("nnUNetTrainer")
    pictures = [p for p in (find_progress_png(results.parent, ctx.dataset_name, PRETRAINER),
                            find_progress_png(results.parent, ctx.dataset_name, FINETUNER)) if p]
    n = len(list(pred_dir.glob("*.nii.gz")))
    aspc = f"; ASPC {aspc_pred:.1f} (GT {aspc_ref:.1f})" if aspc_pred is not None and aspc_ref is not None else ""
    return RecipeResult(f"pretrained U-Net + label maps ({n} test visits{aspc})", "mean fg Dice", dice,
                        base.value if base is not None else None,
                        "nnUNetTrainer, random init" if base is not None else "nnUNetTrainer not run",
                        pictures, pred_dir)
