"""Final validation of a TFM run: image similarity of TFM and LCI on the frozen validation draws."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from longnet.api import forecast_comparison, save_json


@torch.no_grad()
def write_validation_summary(trainer, batches: list[dict], dest: Path) -> dict:
    """NRMSE / PSNR / SSIM (per channel, [0, 1] intensities) of the forecast and of the LCI baseline, overall
    and inside the region that changed, for every frozen validation draw; mean over draws."""
    trainer.network.eval()
    per_case = []
    for batch in batches:
        batch = trainer.prepare_batch(batch)
        pred = trainer.forecast(batch).float().cpu().numpy()
        tgt, lci = batch["target"].float().cpu().numpy(), batch["lci"].float().cpu().numpy()
        for b in range(pred.shape[0]):
            for c in range(pred.shape[1]):
                per_case.append(forecast_comparison(pred[b, c], tgt[b, c], lci[b, c], normalise=False))
    keys = sorted({k for row in per_case for k in row})
    mean = {k: _nanmean([row[k] for row in per_case if k in row]) for k in keys}
    summary = {"task": "forecast", "source": "frozen validation draws (centre crops, [0, 1] intensities)",
               "n": len(per_case), "mean": mean, "per_sample": per_case}
    save_json(summary, dest)
    trainer.print("final validation: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items() if "changed" not in k))
    return summary


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")
