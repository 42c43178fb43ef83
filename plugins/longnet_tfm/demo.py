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
    """LCI, TFM forecast and true target (top), and where each is wrong (bottom): both absolute errors on one
    colour scale, and |LCI error| - |TFM error| (blue where the forecast is closer). The slice is the one where
    the anatomy changed most since the last context visit, where forecasting matters; the titles give each
    image's RMSE over the whole volume, so the picture can be read against the demo's table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    name = f"{case}_{channel:04d}.nii.gz"
    if not (pred / name).is_file():
        name = f"{case}_0000.nii.gz"
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float32)  # noqa: E731
    lci, tfm, ref = read(pred / "lci" / name), read(pred / name), read(pred / "reference" / name)
    err_lci, err_tfm = np.abs(lci - ref), np.abs(tfm - ref)
    z = int(np.argmax(np.abs(lci - ref).reshape(len(ref), -1).sum(1)))
    rmse = lambda e: float(np.sqrt(np.mean(e ** 2)))  # noqa: E731
    closer = float(np.mean(err_tfm < err_lci))
    vmax = float(np.percentile(np.concatenate([err_lci[z].ravel(), err_tfm[z].ravel()]), 99.5)) or 1e-6
    gain = err_lci[z] - err_tfm[z]
    glim = float(np.percentile(np.abs(gain), 99.5)) or 1e-6
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    for ax, (title, img) in zip(axes[0], (("LCI (last context visit)", lci[z]), ("TFM forecast", tfm[z]),
                                          ("true target", ref[z]))):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
    im = None
    for ax, (title, err, vol) in zip(axes[1][:2], (("|LCI - target|", err_lci[z], err_lci),
                                                   ("|TFM - target|", err_tfm[z], err_tfm))):
        im = ax.imshow(err, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{title}\nRMSE {rmse(vol):.4f} (whole volume)", fontsize=10)
    fig.colorbar(im, ax=list(axes[1][:2]), fraction=0.046, pad=0.02, label="absolute error (shared scale)")
    im2 = axes[1][2].imshow(gain, cmap="RdBu", vmin=-glim, vmax=glim)
    axes[1][2].set_title(f"|LCI err| - |TFM err|: blue = TFM closer\n(TFM closer in {closer:.0%} of voxels)",
                         fontsize=10)
    fig.colorbar(im2, ax=axes[1][2], fraction=0.046, pad=0.04, label="error reduction by TFM")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"TFMTrainer: forecast of {case} (last visit) from the earlier visits\n"
                 f"slice {z}, where the anatomy changed most since the last context visit; intensities in [0, 1]",
                 fontsize=11)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=90)
    plt.close(fig)
    return dest
