"""Prediction overlays: an image slice with ground-truth and predicted contours, one row per case.

A picture of a few cases tells a person at a glance whether a segmentation is right, which a Dice
number alone does not. Uses matplotlib's Agg backend so it works on machines without a display.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from longnet.utils.files import atomic_path

_COLOURS = ["#00d0ff", "#ffd000", "#ff4fd8", "#60ff60", "#ff8040", "#a080ff"]


@dataclass
class OverlayCase:
    """One case to draw. Arrays are Z×Y×X (image: one channel, float; gt/pred: integer labels)."""

    title: str
    image: np.ndarray
    gt: np.ndarray | None
    pred: np.ndarray | None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # z, y, x: keeps anisotropic slices in proportion


def best_slices(seg: np.ndarray | None, shape: Sequence[int]) -> tuple[int, int]:
    """Axial (z) and coronal (y) slice with the most foreground, so every class is likely visible."""
    if seg is None or not np.any(seg > 0):
        return shape[0] // 2, shape[1] // 2
    fg = seg > 0
    z = int(np.argmax(fg.sum(axis=(1, 2))))
    y = int(np.argmax(fg.sum(axis=(0, 2))))
    return z, y


def _contours(ax, seg2d: np.ndarray, labels: Sequence[int], style: str, width: float) -> None:
    for i, lab in enumerate(labels):
        mask = (seg2d == lab).astype(float)
        if mask.any() and not mask.all():
            ax.contour(mask, levels=[0.5], colors=[_COLOURS[i % len(_COLOURS)]], linestyles=style, linewidths=width)


def save_overlay_png(cases: Sequence[OverlayCase], dest: str | Path, label_names: dict[int, str] | None = None,
                     title: str | None = None, dpi: int = 110) -> Path:
    """Draw each case's axial and coronal slices with GT (solid) and prediction (dashed) contours."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if not cases:
        raise ValueError("no cases to draw")
    labels = sorted({int(v) for c in cases for s in (c.gt, c.pred) if s is not None for v in np.unique(s) if v > 0})
    names = label_names or {}
    fig, axes = plt.subplots(len(cases), 2, figsize=(6.4, 3.0 * len(cases) + 0.8), squeeze=False)
    for row, case in zip(axes, cases):
        z, y = best_slices(case.gt if case.gt is not None else case.pred, case.image.shape)
        lo, hi = np.percentile(case.image, [1, 99.5])
        sz, sy, sx = case.spacing
        for ax, view, idx in ((row[0], "axial", z), (row[1], "coronal", y)):
            take = (lambda a: a[idx]) if view == "axial" else (lambda a: a[:, idx])
            aspect = (sy if view == "axial" else sz) / sx
            ax.imshow(take(case.image), cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest",
                      aspect=aspect)
            if case.gt is not None:
                _contours(ax, take(case.gt), labels, "solid", 1.6)
            if case.pred is not None:
                _contours(ax, take(case.pred), labels, "dashed", 1.4)
            ax.set_title(f"{case.title} · {view} {'z' if view == 'axial' else 'y'}={idx}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Line2D([], [], color=_COLOURS[i % len(_COLOURS)], lw=2, label=names.get(lab, f"label {lab}"))
               for i, lab in enumerate(labels)]
    handles += [Line2D([], [], color="white", lw=1.6, ls="solid", label="ground truth"),
                Line2D([], [], color="white", lw=1.4, ls="dashed", label="prediction")]
    legend = fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8,
                        facecolor="#303030", labelcolor="white", frameon=True)
    legend.get_frame().set_edgecolor("#303030")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97 if title else 1))
    dest = Path(dest)
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return dest


def overlay_from_folders(images_dir: str | Path, gt_dir: str | Path | None, pred_dir: str | Path | None,
                         case_ids: Sequence[str], dest: str | Path, channel: int = 0, file_ending: str = ".nii.gz",
                         label_names: dict[int, str] | None = None, title: str | None = None) -> Path:
    """Read the listed cases from raw-format folders (missing GT/prediction files are skipped) and draw them."""
    import SimpleITK as sitk

    def read(path: Path) -> np.ndarray | None:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) if path.is_file() else None

    def spacing_of(path: Path) -> tuple[float, float, float]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return tuple(float(v) for v in reversed(reader.GetSpacing()))  # type: ignore[return-value]

    cases = []
    for cid in case_ids:
        image_path = Path(images_dir) / f"{cid}_{channel:04d}{file_ending}"
        image = read(image_path)
        if image is None:
            continue
        gt = read(Path(gt_dir) / f"{cid}{file_ending}") if gt_dir else None
        pred = read(Path(pred_dir) / f"{cid}{file_ending}") if pred_dir else None
        cases.append(OverlayCase(cid, image.astype(np.float32), gt, pred, spacing_of(image_path)))
    return save_overlay_png(cases, dest, label_names=label_names, title=title)
