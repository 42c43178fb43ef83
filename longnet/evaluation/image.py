"""Image similarity for forecasting (TFM): NRMSE, PSNR and 3D Gaussian SSIM on [0, 1]-normalised intensities.

Both images are scaled with the *reference* image's min–max range, so a prediction is not rewarded for
matching a rescaled version of itself; values outside the range are kept (not clipped).
"""
from __future__ import annotations

import math

import numpy as np


def minmax_normalise(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(x − lo) / (hi − lo) with lo/hi defaulting to x's own range; a constant image maps to 0."""
    x = np.asarray(x, dtype=np.float64)
    lo = float(x.min()) if lo is None else float(lo)
    hi = float(x.max()) if hi is None else float(hi)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def mse(pred: np.ndarray, ref: np.ndarray) -> float:
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {ref.shape}")
    return float(np.mean((pred - ref) ** 2))


def nrmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """√MSE of intensities already normalised to [0, 1] (= RMSE / data range)."""
    return math.sqrt(mse(pred, ref))


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float = 1.0) -> float:
    """10·log10(range² / MSE); +inf for identical images."""
    m = mse(pred, ref)
    return float("inf") if m == 0 else 10.0 * math.log10(data_range ** 2 / m)


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5) -> float:
    """Mean Gaussian-window SSIM (MONAI), 2D or 3D by the array's dimensionality; every spatial axis must be at
    least `win_size` long (MONAI's valid convolution)."""
    import torch
    from monai.metrics import SSIMMetric

    pred, ref = np.asarray(pred, np.float32), np.asarray(ref, np.float32)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {ref.shape}")
    if min(pred.shape) < win_size:
        raise ValueError(f"SSIM needs every axis ≥ {win_size} voxels, got {pred.shape}")
    metric = SSIMMetric(spatial_dims=pred.ndim, data_range=data_range, kernel_type="gaussian", win_size=win_size,
                        kernel_sigma=sigma)
    value = metric(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None])
    return float(value.reshape(-1)[0])


def image_similarity(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """NRMSE, PSNR, SSIM after scaling both images with the reference's min–max range (inside `mask` if given
    for the range; SSIM always on the full grid)."""
    ref = np.asarray(ref, np.float64)
    region = ref[mask.astype(bool)] if mask is not None else ref
    lo, hi = float(region.min()), float(region.max())
    p, r = minmax_normalise(pred, lo, hi), minmax_normalise(ref, lo, hi)
    out = {"NRMSE": nrmse(p, r), "PSNR": psnr(p, r)}
    try:
        out["SSIM"] = ssim(p, r)
    except ValueError:
        out["SSIM"] = float("nan")
    return out


def masked_ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, data_range: float = 1.0, win_size: int = 11,
                sigma: float = 1.5) -> float:
    """Mean of the Gaussian SSIM map over the voxels of `mask` (MONAI's map is 'valid', so the mask is cut by
    win_size // 2 at every border); NaN if no masked voxel has a full window."""
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    pred, ref = np.asarray(pred, np.float32), np.asarray(ref, np.float32)
    if min(pred.shape) < win_size:
        return float("nan")
    nd = pred.ndim
    smap, _ = compute_ssim_and_cs(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None], nd,
                                  [win_size] * nd, [sigma] * nd, data_range)
    h = win_size // 2
    inner = np.asarray(mask, bool)[tuple(slice(h, s - h) for s in pred.shape)]
    values = smap[0, 0].numpy()[inner]
    return float(values.mean()) if values.size else float("nan")


def _region_metrics(p: np.ndarray, r: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    if not mask.any():
        return {"NRMSE": float("nan"), "PSNR": float("nan"), "SSIM": float("nan")}
    m = float(np.mean((p[mask] - r[mask]) ** 2))
    return {"NRMSE": math.sqrt(m), "PSNR": float("inf") if m == 0 else 10.0 * math.log10(1.0 / m),
            "SSIM": masked_ssim(p, r, mask)}


def forecast_comparison(pred: np.ndarray, ref: np.ndarray, baseline: np.ndarray | None = None,
                        change_mask: np.ndarray | None = None, change_threshold: float = 0.1,
                        normalise: bool = True) -> dict[str, float]:
    """Forecast metrics side by side with a baseline (e.g. LCI, the last context image), overall and inside
    the region that changed.

    All images are scaled with the reference's min–max range (`normalise`; off when already in [0, 1]).
    Changed region = `change_mask` (e.g. a label-change mask) if given, else |ref − baseline| >
    `change_threshold` on the [0, 1] scale. Keys: NRMSE, PSNR, SSIM (prediction), baseline_<m>, <m>_changed,
    baseline_<m>_changed, changed_fraction.
    """
    ref = np.asarray(ref, np.float64)
    lo, hi = (float(ref.min()), float(ref.max())) if normalise else (0.0, 1.0)
    r = minmax_normalise(ref, lo, hi)
    p = minmax_normalise(pred, lo, hi)
    b = None if baseline is None else minmax_normalise(baseline, lo, hi)
    out = _full_metrics(p, r)
    if b is not None:
        out.update({f"baseline_{k}": v for k, v in _full_metrics(b, r).items()})
    if change_mask is None and b is not None:
        change_mask = np.abs(r - b) > change_threshold
    if change_mask is not None:
        mask = np.asarray(change_mask, bool)
        if mask.shape != r.shape:
            raise ValueError(f"change mask shape {mask.shape} differs from the image shape {r.shape}")
        out["changed_fraction"] = float(mask.mean())
        out.update({f"{k}_changed": v for k, v in _region_metrics(p, r, mask).items()})
        if b is not None:
            out.update({f"baseline_{k}_changed": v for k, v in _region_metrics(b, r, mask).items()})
    return out


def _full_metrics(p: np.ndarray, r: np.ndarray) -> dict[str, float]:
    out = {"NRMSE": nrmse(p, r), "PSNR": psnr(p, r)}
    try:
        out["SSIM"] = ssim(p, r)
    except ValueError:
        out["SSIM"] = float("nan")
    return out
