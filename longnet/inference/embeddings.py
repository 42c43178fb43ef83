"""Output of representation models: `embeddings.npz` (+ CSV) per case and a PNG of subject trajectories in 2D.

`embeddings.npz` holds `cases` (ids) and `embeddings` (N×D float32), the layout `longnet_evaluate --task
embedding` reads. The trajectory picture projects every embedding to 2D (UMAP when the `umap-learn` package is
installed and asked for, PCA otherwise) and joins each subject's visits in time order, so stable within-subject
trajectories and separated subjects are visible at a glance.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from longnet.utils.files import atomic_path


def save_embeddings(cases: Sequence[str], embeddings: np.ndarray, out_folder: str | Path,
                    columns: Mapping[str, Sequence] | None = None, name: str = "embeddings") -> tuple[Path, Path]:
    """Write `<name>.npz` and `<name>.csv` (case, extra `columns`..., e0..e{D-1}) atomically; returns both."""
    out_folder = Path(out_folder)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(cases):
        raise ValueError(f"need N×D embeddings for {len(cases)} cases, got shape {emb.shape}")
    columns = dict(columns or {})
    npz, table = out_folder / f"{name}.npz", out_folder / f"{name}.csv"
    with atomic_path(npz, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, cases=np.asarray(list(cases), dtype=str), embeddings=emb)
    with atomic_path(table, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case", *columns, *(f"e{i}" for i in range(emb.shape[1]))])
            for i, c in enumerate(cases):
                w.writerow([c, *(columns[k][i] for k in columns), *(f"{v:.6g}" for v in emb[i])])
    return npz, table


def project_2d(embeddings: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N×2 coordinates, method used). `auto` = UMAP if installed and N is large enough, else PCA; cosine
    geometry is kept by L2-normalising first (the distances every longnet embedding metric uses)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method in ("auto", "umap") and len(x) >= 10:
        try:
            import umap  # type: ignore[import-not-found]

            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed)
            return np.asarray(reducer.fit_transform(x)), "UMAP"
        except ImportError:
            if method == "umap":
                raise
    centred = x - x.mean(0)
    if len(x) < 2 or not np.any(centred):
        return np.zeros((len(x), 2)), "PCA"
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "PCA"


def plot_trajectories(embeddings: Mapping[str, np.ndarray], subjects: Mapping[str, Sequence[str]],
                      dest: str | Path, title: str = "", method: str = "auto",
                      max_subjects_labelled: int = 12) -> Path:
    """PNG of subject trajectories in 2D: one colour per subject, visits joined in time order, an arrow head on
    the last visit. Cases missing from `subjects` are drawn as grey points. The caption gives the spread of the
    (L2-normalised) embeddings and, for PCA, each axis' share of the variance: a projection rescales to fill the
    axes, so without them a collapsed embedding (e.g. a random-init encoder) looks as spread out as a trained one."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(embeddings)
    raw = np.stack([np.asarray(embeddings[c], dtype=np.float64).ravel() for c in cases])
    coords, used = project_2d(raw, method)
    unit = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    centred = unit - unit.mean(0)
    spread = float(np.linalg.norm(centred, axis=1).mean())
    total = float((centred ** 2).sum(1).mean())
    share = [float(coords[:, k].var() / total) if used == "PCA" and total > 0 else None for k in range(2)]
    pos = dict(zip(cases, coords))
    fig, ax = plt.subplots(figsize=(7.6, 5.4), dpi=110)
    cmap = plt.get_cmap("tab10" if len(subjects) <= 10 else "tab20")
    drawn: set[str] = set()
    for k, (subject, visits) in enumerate(subjects.items()):
        pts = np.array([pos[c] for c in visits if c in pos])
        if len(pts) == 0:
            continue
        drawn.update(c for c in visits if c in pos)
        colour = cmap(k % cmap.N)
        label = subject if k < max_subjects_labelled else None
        ax.plot(pts[:, 0], pts[:, 1], "-o", color=colour, ms=4, lw=1.2, label=label)
        ax.plot(pts[:1, 0], pts[:1, 1], "s", color=colour, ms=6)
        if len(pts) > 1:
            ax.annotate("", xy=pts[-1], xytext=pts[-2], arrowprops={"arrowstyle": "->", "color": colour})
    rest = np.array([pos[c] for c in cases if c not in drawn])
    if len(rest):
        ax.plot(rest[:, 0], rest[:, 1], ".", color="0.6", label="no subject")
    for k, setter in enumerate((ax.set_xlabel, ax.set_ylabel)):
        setter(f"{used} {k + 1}" + (f" ({share[k]:.0%} of the variance)" if share[k] is not None else ""))
    caption = (f"{used} of L2-normalised embeddings (mean distance to their centroid {spread:.2g}); "
               "square = first visit, arrow = last")
    lines = [textwrap.fill(t, 90) for t in [*(title.splitlines() if title else ["embedding trajectories"]), caption]]
    ax.set_title("\n".join(lines), fontsize=8.5)
    if subjects:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest
