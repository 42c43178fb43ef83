"""Paired augmentation of (current visit ⊕ prior visit) patches, built from nnU-Net's recipe.

The two visits are stacked along the channel axis before any transform, so rotation, scaling and mirroring
are applied identically and voxel correspondence survives (as LongRep's pair augmentation does). The prior's
segmentation travels as segmentation channel 1 and becomes one-hot input channels after the spatial
transforms, exactly like the second stage of nnU-Net's cascade (including its training-time corruption:
random morphology and removed components, so the network learns not to copy the prior's mask — at inference
that mask is the model's own, imperfect prediction). The label stays the current visit's (channel 0).

Intensity transforms are by default replayed with one set of random parameters on both visits (`same`):
an unchanged subject then gives identical current and prior channels after augmentation, so differences
the network sees come from the anatomy, not the augmentation. `independent` applies nnU-Net's per-channel
draws to every channel (simulating scanner differences between visits).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from longnet.api import SpatialAugConfig, replay, training_transforms, validation_transforms

INTENSITY_MODES = ("same", "independent")
_INTENSITY_TYPES = (GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform,
                    ContrastTransform, SimulateLowResolutionTransform, GammaTransform)


def _is_intensity(t: BasicTransform) -> bool:
    inner = t.transform if isinstance(t, RandomTransform) else t
    return isinstance(inner, _INTENSITY_TYPES)


class PerVisitReplay(BasicTransform):
    """Apply the wrapped intensity transforms to each visit's channel group with identical random draws."""

    def __init__(self, transforms: Sequence[BasicTransform], channels_per_visit: int):
        super().__init__()
        self.inner = ComposeTransforms(list(transforms))
        self.channels_per_visit = int(channels_per_visit)

    def apply(self, data_dict: dict, **params) -> dict:
        image = data_dict["image"]
        seed = int(np.random.randint(2 ** 31))  # the loader seeds the global RNGs per batch
        groups = torch.split(image, self.channels_per_visit)
        data_dict["image"] = torch.cat([replay(self.inner, g, seed) for g in groups])
        return data_dict


def pair_intensity(compose: ComposeTransforms, channels_per_visit: int) -> ComposeTransforms:
    """The same pipeline with its run of intensity transforms wrapped in one `PerVisitReplay`."""
    out: list[BasicTransform] = []
    run: list[BasicTransform] = []
    for t in compose.transforms:
        if _is_intensity(t):
            run.append(t)
            continue
        if run:
            out.append(PerVisitReplay(run, channels_per_visit))
            run = []
        out.append(t)
    if run:
        out.append(PerVisitReplay(run, channels_per_visit))
    return ComposeTransforms(out)


def prior_transforms(patch_size: Sequence[int], aug: SpatialAugConfig, ds_scales: list | None,
                     channels_per_visit: int, prior_seg_labels: Sequence[int] = (), train: bool = True,
                     intensity: str = "same", use_mask_for_norm: Sequence[bool] | None = None,
                     regions: list | None = None, ignore_label: int | None = None) -> BasicTransform:
    """Transforms for a sample {'image': 2C×..., 'segmentation': (1 or 2)×...} → network input and target.

    `prior_seg_labels` non-empty: segmentation channel 1 (the prior's labels) becomes one one-hot channel per
    label after the image channels. Masking for normalisation uses the current visit's mask on both visits.
    """
    c = int(channels_per_visit)
    labels = list(prior_seg_labels) or None
    if not train:
        return validation_transforms(ds_scales, regions, ignore_label, labels, 2 * c)
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
    mask = list(use_mask_for_norm) * 2 if use_mask_for_norm else None
    t = training_transforms(list(patch_size), aug, ds_scales, mask, regions, ignore_label,
                            cascade_labels=labels, num_image_channels=2 * c)
    return pair_intensity(t, c) if intensity == "same" else t
