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
#: Small U-Net trained on crops, σ = 0: the demo's CPU budget (bench/tfm_demo.py uses the same network and σ, with
#: lr 1e-3 over 12 x 20 steps where the demo has 10 x 20).
DEMO_NET = ["--base-channels", "8", "--channel-mult", "1,2,2", "--attention-levels", "none", "--no-mid-attention",
            "--downsample", "all", "--patch-size", "16,24,24", "--batch-size", "4", "--sigma", "0", "--lr", "2e-3"]


def run_demo(ctx):
    """Recipe row: test NRMSE of TFM vs LCI (side-by-side table with PSNR/SSIM in the evaluate output)."""
    import torch

    from longnet.api import RecipeResult, aligned_plans, call_command

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
    case, channel, note = typical_case(summary)
    pictures = [forecast_picture(pred, case, Path(ctx.pictures) / f"forecast_{TRAINER}.png", channel, note)]
    return RecipeResult(f"forecast images of {len(forecasts)} test subjects (+ LCI, reference)",
                        "test NRMSE (lower is better)", overall["prediction"]["NRMSE"], overall["LCI"]["NRMSE"],
                        "LCI", pictures, pred)


def typical_case(summary: dict) -> tuple[str, int, str]:
    """(case, channel, note) of the test image whose NRMSE gain over LCI is the median one, and a line saying on how
    many images TFM is closer: the best image would flatter TFM, the first one may mislead either way (on the demo,
    TFM wins mostly on channel 0 and in the changed region)."""
    rows = [r for r in summary.get("metric_per_case", []) if r.get("baseline")]
    rows.sort(key=lambda r: r["baseline"]["NRMSE"] - r["metrics"]["NRMSE"])
    median = rows[len(rows) // 2]
    better = sum(r["metrics"]["NRMSE"] < r["baseline"]["NRMSE"] for r in rows)
    changed = [r["changed"] for r in rows if (r.get("changed") or {}).get("baseline")]
    better_changed = sum(c["prediction"]["NRMSE"] < c["baseline"]["NRMSE"] for c in changed)
    overall = summary.get("side_by_side", {}).get("overall", {})
    pooled = (f"; pooled {overall['prediction']['NRMSE']:.3f} vs {overall['LCI']['NRMSE']:.3f}"
              if "prediction" in overall and "LCI" in overall else "")
    note = (f"TFM's NRMSE is below LCI's on {better} of {len(rows)} test images (cases x channels{pooled}), and on "
            f"{better_changed} of {len(changed)} in the changed region; shown: the image with the median difference")
    case, channel = median["case"].rsplit("_", 1)
    return case, int(channel), note


def forecast_picture(pred: Path, case: str, dest: Path, channel: int = 1, note: str = "") -> Path:
    """LCI, TFM forecast and true target (top), and where each is wrong (bottom): both absolute errors on one
    colour scale, and |LCI error| - |TFM error| (blue where the forecast is closer). The slice is the one where
    the anatomy changed most since the last context visit, where forecasting matters; the titles give each
    image's NRMSE over the whole volume, the table's metric, so the picture can be read against it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import textwrap

    import numpy as np
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    name = f"{case}_{channel:04d}.nii.gz"
    if not (pred / name).is_file():
        name = f"{case}_0000.nii.gz"
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float32)  # noqa: E731
    lci, tfm, ref = read(pred / "lci" / name), read(pred / name), read(pred / "reference" / name)
    err_lci, err_tfm = np.abs(lci - ref), np.abs(tfm - ref)
    head = gaussian_filter(ref, 1.0) > 0.05
    # smoothed and inside the head: anatomical change, not the scan noise that dominates a raw difference
    change = np.abs(gaussian_filter(lci - ref, 1.0)) * head
    z = int(np.argmax(change.reshape(len(ref), -1).sum(1)))
    nrmse = lambda e: float(np.sqrt(np.mean(e ** 2)) / max(float(ref.max() - ref.min()), 1e-12))  # noqa: E731
    closer = float(np.mean(err_tfm[head] < err_lci[head])) if head.any() else float("nan")
    vmax = float(np.percentile(np.concatenate([err_lci[z].ravel(), err_tfm[z].ravel()]), 99.5)) or 1e-6
    gain = err_lci[z] - err_tfm[z]
    glim = float(np.percentile(np.abs(gain), 99.5)) or 1e-6
    fig = plt.figure(figsize=(11, 8.2))
    grid = fig.add_gridspec(2, 5, width_ratios=[1, 1, 0.06, 1, 0.06], wspace=0.3, hspace=0.3,
                            top=0.80 if note else 0.86, bottom=0.03, left=0.02, right=0.92)
    for col, (title, img) in zip((0, 1, 3), (("LCI (last context visit)", lci[z]), ("TFM forecast", tfm[z]),
                                             ("true target", ref[z]))):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    im = None
    for col, (title, err, vol) in zip((0, 1), (("|LCI - target|", err_lci[z], err_lci),
                                               ("|TFM - target|", err_tfm[z], err_tfm))):
        ax = fig.add_subplot(grid[1, col])
        im = ax.imshow(err, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{title}\nNRMSE {nrmse(vol):.4f} (whole volume)", fontsize=10)
        ax.axis("off")
    fig.colorbar(im, cax=fig.add_subplot(grid[1, 2]), label="absolute error (shared scale)")
    ax = fig.add_subplot(grid[1, 3])
    im2 = ax.imshow(gain, cmap="RdBu", vmin=-glim, vmax=glim)
    ax.set_title(f"|LCI err| - |TFM err|: blue = TFM closer\n(TFM closer in {closer:.0%} of head voxels)",
                 fontsize=10)
    ax.axis("off")
    fig.colorbar(im2, cax=fig.add_subplot(grid[1, 4]), label="error reduction by TFM")
    fig.suptitle(f"TFMTrainer: forecast of {case}, channel {channel} (last visit) from the earlier visits\n"
                 f"slice {z}, where the anatomy changed most since the last context visit; intensities in [0, 1]"
                 + (f"\n{textwrap.fill(note, 110)}" if note else ""), fontsize=10)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=90)
    plt.close(fig)
    return dest
