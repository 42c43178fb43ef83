"""Demo recipe of TFMTrainer: forecast each test subject's last visit, NRMSE of TFM next to the LCI baseline.

TFM needs visits in voxel correspondence, so the recipe uses the demo dataset preprocessed with rigid
intra-subject alignment (`longnet.demo.recipes.aligned_plans`, shared with the LongRep recipe). Then: train
(fold all, the small demo U-Net of bench/tfm_demo.py), `longnet_predict --with-lci --with-context-mean`,
`longnet_evaluate --task forecast`. bench/tfm_demo.py is the full benchmark of the same pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIG = "3d_fullres"
TRAINER = "TFMTrainer"
#: Small U-Net trained on crops: the demo's CPU budget (bench/tfm_demo.py uses the same).
DEMO_NET = ["--base-channels", "8", "--channel-mult", "1,2,2", "--attention-levels", "none", "--no-mid-attention",
            "--downsample", "all", "--patch-size", "16,24,24", "--batch-size", "4", "--lr", "2e-3"]


def run_demo(ctx):
    """Recipe row: test NRMSE of TFM vs LCI (side-by-side table with PSNR/SSIM in the evaluate output)."""
    import torch

    from longnet.demo.recipes import RecipeResult, aligned_plans, call_command

    s = ctx.settings
    quick = s.epochs * s.iters_per_epoch < 30
    epochs, iters = (2, 5) if quick else (10, 20)
    raw = Path(ctx.raw_folder)
    plans = aligned_plans(ctx)
    threads = torch.get_num_threads()
    if ctx.device == "cpu":
        torch.set_num_threads(1)  # shared CPU cores: one intra-op thread is several times faster than two
    try:
        call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", TRAINER, "-p", plans,
                                       "-device", ctx.device, "--epochs", str(epochs), "--iters-per-epoch",
                                       str(iters), *DEMO_NET])
        pred = Path(ctx.out) / "predictions" / TRAINER
        call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(ctx.dataset_id),
                                         "-c", CONFIG, "-tr", TRAINER, "-p", plans, "-f", "all", "-device",
                                         ctx.device, "--patients", str(raw / "patientsTs.json"), "--with-lci"])
    finally:
        torch.set_num_threads(threads)
    call_command("evaluate", "main", [str(pred / "reference"), str(pred), "--task", "forecast"])
    summary = json.loads((pred / "summary.json").read_text())
    overall = summary["side_by_side"]["overall"]
    forecasts = json.loads((pred / "forecasts.json").read_text())["forecasts"]
    pictures = [forecast_picture(pred, forecasts[0]["target"], Path(ctx.pictures) / f"forecast_{TRAINER}.png")]
    return RecipeResult(f"forecast images of {len(forecasts)} test subjects (+ LCI, reference)",
                        "test NRMSE (lower is better)", overall["prediction"]["NRMSE"], overall["LCI"]["NRMSE"],
                        "LCI", pictures, pred)


def forecast_picture(pred: Path, case: str, dest: Path, channel: int = 1) -> Path:
    """Middle slice of LCI, TFM forecast and true target, and the two absolute errors, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    name = f"{case}_{channel:04d}.nii.gz"
    if not (pred / name).is_file():
        name = f"{case}_0000.nii.gz"
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # noqa: E731
    lci, tfm, ref = read(pred / "lci" / name), read(pred / name), read(pred / "reference" / name)
    z = ref.shape[0] // 2
    panels = [("LCI (last context)", lci[z], "gray", 1), ("TFM forecast", tfm[z], "gray", 1),
              ("true target", ref[z], "gray", 1), ("|LCI - target|", abs(lci[z] - ref[z]), "magma", 0.3),
              ("|TFM - target|", abs(tfm[z] - ref[z]), "magma", 0.3)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, img, cmap, vmax) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{case}: forecast of the last visit from the earlier ones (slice {z}, [0, 1] intensities)",
                 fontsize=10)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=90)
    plt.close(fig)
    return dest
