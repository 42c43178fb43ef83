"""Demo recipe of the supervised segmentation trainer: Dice on the demo test split vs chance, plus overlays."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from longnet.demo.recipes import CONFIG, DemoContext, RecipeResult, call_command, recipe

LABEL_NAMES = {1: "ventricles", 2: "lesion"}


def _read_label(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dice_and_chance(gt_dir: Path, pred_dir: Path | None, labels: list[int]) -> tuple[float | None, float]:
    """Mean foreground Dice (cases × labels present in GT or prediction) and the chance Dice baseline.

    Chance = expected Dice of a prediction drawn at random with the true class proportions, which is
    the class's voxel fraction: what a network that learned nothing spatial would score.
    """
    dices, chance = [], []
    for gt_path in sorted(gt_dir.glob("*.nii.gz")):
        gt = _read_label(gt_path)
        pred = _read_label(pred_dir / gt_path.name) if pred_dir and (pred_dir / gt_path.name).is_file() else None
        for lab in labels:
            g = gt == lab
            if g.any():
                chance.append(float(g.mean()))
            if pred is None:
                continue
            p = pred == lab
            denom = g.sum() + p.sum()
            if denom:
                dices.append(float(2 * np.logical_and(g, p).sum() / denom))
    return (float(np.mean(dices)) if dices else None), (float(np.mean(chance)) if chance else 0.0)


def foreground_dice_from_summary(summary_path: Path) -> float | None:
    """nnU-Net's summary.json keeps the mean foreground Dice under foreground_mean.Dice."""
    try:
        summary = json.loads(summary_path.read_text())
        value = summary["foreground_mean"]["Dice"]
        return float(value) if value is not None and np.isfinite(value) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_progress_png(results_root: Path, dataset_name: str, trainer: str) -> Path | None:
    hits = sorted((results_root / dataset_name).glob(f"{trainer}__*__{CONFIG}/fold_all/progress.png"))
    return hits[0] if hits else None


@recipe("nnUNetTrainer")
def segmentation_recipe(ctx: DemoContext) -> RecipeResult:
    """Supervised segmentation: train on labelled visits, predict the test split, Dice vs chance."""
    trainer = "nnUNetTrainer"
    s = ctx.settings
    call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", trainer, "-device", ctx.device,
                                   "--epochs", str(s.epochs), "--iters-per-epoch", str(s.iters_per_epoch),
                                   "--val-iters", str(s.val_iters), "--no-validation-mirroring"])
    pred_dir = ctx.out / "predictions" / trainer
    call_command("predict", "main", ["-i", str(ctx.raw_folder / "imagesTs"), "-o", str(pred_dir),
                                     "-d", str(ctx.dataset_id), "-c", CONFIG, "-tr", trainer, "-f", "all",
                                     "-device", ctx.device, "--patients", str(ctx.raw_folder / "patientsTs.json")]
                 + ([] if s.tta else ["--disable_tta"]))
    gt_dir = ctx.raw_folder / "labelsTs"
    call_command("evaluate", "main", [str(gt_dir), str(pred_dir), "-d", str(ctx.dataset_id),
                                      "--patients", str(ctx.raw_folder / "patientsTs.json")])
    own_dice, chance = dice_and_chance(gt_dir, pred_dir, sorted(LABEL_NAMES))
    dice = foreground_dice_from_summary(pred_dir / "summary.json")
    if dice is None:
        dice = own_dice
    pictures = []
    progress = find_progress_png(Path(os.environ["LONGNET_RESULTS"]), ctx.dataset_name, trainer)
    if progress:
        pictures.append(progress)
    pictures.append(_overlay(ctx, pred_dir, trainer, dice))
    return RecipeResult(f"label maps ({len(list(pred_dir.glob('*.nii.gz')))} test visits)", "mean fg Dice",
                        dice, chance, "chance", pictures, pred_dir)


def _overlay(ctx: DemoContext, pred_dir: Path, trainer: str, dice: float | None) -> Path:
    """Overlay of a few test visits: the first and last visit of up to two subjects (change is visible)."""
    from longnet.demo.overlay import overlay_from_folders

    patients = json.loads((ctx.raw_folder / "patientsTs.json").read_text())
    cases: list[str] = []
    for visits in list(patients.values())[:2]:
        cases += [visits[0], visits[-1]] if len(visits) > 1 else visits[:1]
    title = f"{trainer} on the demo test split" + (f" (mean fg Dice {dice:.3f})" if dice is not None else "")
    return overlay_from_folders(ctx.raw_folder / "imagesTs", ctx.raw_folder / "labelsTs", pred_dir, cases,
                                ctx.pictures / f"overlay_{trainer}.png", channel=1, label_names=LABEL_NAMES,
                                title=title + "\nFLAIR; solid = ground truth, dashed = prediction")
