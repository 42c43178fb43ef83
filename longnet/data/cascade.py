"""The cascade's second stage (`3d_cascade_fullres`): image + one-hot of the previous stage's segmentation.

The previous stage (`3d_lowres`) leaves its validation predictions on this stage's preprocessed grid in
`<TRAINER>__<PLANS>__3d_lowres/predicted_next_stage/3d_cascade_fullres/{case}.b2nd` (see seg_validation). The
input channel layout is nnU-Net's: the image channels, then one channel per foreground label in ascending order
(regions datasets too), so cascade models move between longnet and nnU-Net unchanged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from longnet.errors import LongnetError


def cascade_labels(configuration, label_manager) -> list[int]:
    """Foreground labels that become one-hot input channels; empty for a configuration without a previous stage."""
    return list(label_manager.foreground_labels) if configuration.previous_stage else []


def previous_stage_folder(model_folder: Path, trainer_name: str, configuration) -> Path:
    """Where the previous stage of the same trainer and plans wrote this stage's input segmentations."""
    from longnet.io.model_folder import ModelName

    plans_name = ModelName.parse(model_folder.name).plans
    return (model_folder.parent / ModelName(trainer_name, plans_name, configuration.previous_stage).folder_name()
            / "predicted_next_stage" / configuration.name)


def check_previous_stage(folder: Path, cases: list[str], trainer_name: str, configuration) -> None:
    """Refuse to train before every case has its previous-stage segmentation (all folds of the previous stage
    must have been validated), naming the command that makes them."""
    missing = [c for c in cases if not (folder / f"{c}.b2nd").is_file()]
    if missing:
        raise LongnetError(
            f"{len(missing)} of {len(cases)} case(s) have no segmentation from the previous stage (e.g. "
            f"{', '.join(missing[:3])}): train and validate every fold of {configuration.previous_stage} first "
            f"(longnet_train DATASET {configuration.previous_stage} FOLD -tr {trainer_name}, or --val to only "
            f"validate)", folder)


def one_hot(seg: np.ndarray, labels: list[int]) -> np.ndarray:
    """float32 L×spatial one-hot of a label map (values outside `labels`, such as -1, give all zeros)."""
    seg = np.asarray(seg)
    out = np.zeros((len(labels), *seg.shape), dtype=np.float32)
    for i, lab in enumerate(labels):
        out[i][seg == lab] = 1
    return out


def append_previous_stage(data: np.ndarray, previous_seg: np.ndarray, labels: list[int]) -> np.ndarray:
    """C×spatial image + 1×spatial previous-stage segmentation → (C + L)×spatial network input."""
    prev = previous_seg[0] if previous_seg.ndim == data.ndim else previous_seg
    if tuple(prev.shape) != tuple(data.shape[1:]):
        raise LongnetError(f"previous-stage segmentation has shape {tuple(prev.shape)} but the image "
                           f"{tuple(data.shape[1:])}")
    return np.concatenate([np.asarray(data, dtype=np.float32), one_hot(prev, labels)])
