"""nnU-Net 2.x augmentation probabilities and ranges, the one table both augmentation pipelines read.

The CPU pipeline (`longnet.data.augmentation`, batchgeneratorsv2 transforms per sample) and the batched device
pipeline (`longnet.data.batch_augmentation`) are built from this table, so they cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentationRecipe:
    """Per-sample probabilities (`p_*`), per-channel probabilities and the ranges values are drawn from."""

    p_rotation: float = 0.2
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)  # >1 zooms out (structures get smaller), synchronised across axes
    p_noise: float = 0.1
    noise_sd: tuple[float, float] = (0.0, 0.1)  # standard deviation, same for all channels of a sample
    p_blur: float = 0.2
    p_blur_per_channel: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # per channel and axis
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)  # background-contrast sampling: half below 1, half above
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    p_low_resolution_per_channel: float = 0.5
    low_resolution_scale: tuple[float, float] = (0.5, 1.0)  # synchronised across axes
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_mirror_per_axis: float = 0.5


NNUNET_RECIPE = AugmentationRecipe()
