"""One PNG per training case: the slice with the most foreground, labels painted over the image.

A quick visual check that images and labels belong together (orientation, alignment, label values) before
spending hours on training. Slice choice and colours follow nnU-Net 2.8.1's overlay tool, so pictures of the
same data look the same; unlike longnet/demo/overlay.py (contours of GT and prediction, matplotlib figure)
these are plain RGB pictures at voxel resolution, ignoring spacing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from longnet.errors import DatasetError, LongnetError
from longnet.utils.files import atomic_path
from longnet.utils.parallel import map_processes

# the fixed colour cycle (first entry black: background adds nothing); label values map onto it by rank
COLOUR_CYCLE = ((0, 0, 0), (67, 99, 216), (245, 130, 49), (60, 180, 75), (230, 25, 75), (145, 30, 180),
                (255, 225, 25), (191, 239, 69), (66, 212, 244), (240, 50, 230), (0, 0, 117), (154, 99, 36),
                (128, 128, 0), (128, 0, 0), (70, 153, 144))


def select_slice(seg: np.ndarray) -> int:
    """Index along axis 0 of the slice with the highest mean per-label foreground fraction.

    Each label's per-slice counts are divided by the running total of the whole count table at that point
    (labels already normalised sum to 1 each), as nnU-Net does; later labels therefore weigh less. No
    foreground -> slice 0.
    """
    labels = [v for v in np.unique(seg) if v > 0]
    if not labels:
        return 0
    table = np.zeros((seg.shape[0], len(labels)))
    for i, lab in enumerate(labels):
        table[:, i] = (seg == lab).sum(axis=tuple(range(1, seg.ndim)))
        table[:, i] /= table.sum()
    return int(np.argmax(table.mean(axis=1)))


def overlay_rgb(image: np.ndarray, seg: np.ndarray, intensity: float = 0.6) -> np.ndarray:
    """H×W greyscale + H×W labels -> H×W×3 uint8: image scaled to 0-255, `intensity` × colour added per label
    (labels ranked by sorted value onto COLOUR_CYCLE), rescaled so the brightest channel is 255."""
    if image.shape != seg.shape or image.ndim != 2:
        raise ValueError(f"need one 2D image and label slice of the same shape, got {image.shape} and {seg.shape}")
    rgb = np.repeat(np.asarray(image, dtype=np.float32)[:, :, None], 3, axis=2)
    rgb -= rgb.min()
    if rgb.max() > 0:
        rgb = rgb / rgb.max() * 255
    for rank, value in enumerate(np.unique(seg)):
        rgb[seg == value] += intensity * np.asarray(COLOUR_CYCLE[rank % len(COLOUR_CYCLE)], dtype=np.float64)
    if rgb.max() > 0:
        rgb = rgb / rgb.max() * 255
    return rgb.astype(np.uint8)


def save_png(rgb: np.ndarray, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with atomic_path(dest, suffix=".png") as tmp:
        plt.imsave(tmp, rgb, format="png")


def _overlay_volume(image: np.ndarray, seg: np.ndarray, dest: Path, intensity: float, source: Path) -> Path:
    if image.shape != seg.shape:
        raise DatasetError(f"image shape {image.shape} and label shape {seg.shape} differ", source)
    z = select_slice(seg)
    save_png(overlay_rgb(image[z], seg[z], intensity), dest)
    return dest


def overlay_from_raw(image_file: Path, label_file: Path, dest: Path, intensity: float = 0.6,
                     reader_writer: str = "SimpleITKIO") -> Path:
    """PNG of one raw case (label values as stored), read with the dataset's reader/writer class."""
    from longnet.dataset.reader_choice import reader_writer_by_name

    rw = reader_writer_by_name(reader_writer)
    image, _ = rw.read_images([image_file])
    seg, _ = rw.read_seg(label_file)
    return _overlay_volume(image[0], seg[0], dest, intensity, label_file)


def overlay_from_preprocessed(folder: Path, case_id: str, dest: Path, channel: int = 0,
                              intensity: float = 0.6) -> Path:
    """PNG of one preprocessed case (negative label values, i.e. outside the crop, shown as background)."""
    from longnet.io.storage import load_array

    data = load_array(folder / f"{case_id}.b2nd")
    if channel >= data.shape[0]:
        raise LongnetError(f"-channel_idx {channel} is out of range: the data has {data.shape[0]} channel(s)",
                           folder / f"{case_id}.b2nd")
    seg = load_array(folder / f"{case_id}_seg.b2nd")[0].copy()
    seg[seg < 0] = 0
    return _overlay_volume(data[channel], seg, dest, intensity, folder / f"{case_id}_seg.b2nd")


def preprocessed_cases(folder: Path) -> list[str]:
    """Case ids with both a data and a seg array (works for longnet's and nnU-Net's preprocessed folders)."""
    return sorted(p.name[: -len(".b2nd")] for p in folder.glob("*.b2nd")
                  if not p.name.startswith(".") and not p.name.endswith("_seg.b2nd")
                  and (folder / (p.name[: -len(".b2nd")] + "_seg.b2nd")).is_file())


def _run(job: tuple) -> Path:
    fn, *args = job
    return fn(*args)


def run_jobs(jobs: Sequence[tuple], num_processes: int) -> list[Path]:
    """Run (function, args...) jobs in order, in spawned worker processes when num_processes > 1."""
    return map_processes(_run, list(jobs), num_processes)
