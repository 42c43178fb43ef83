"""nnU-Net's augmentation recipe built from batchgeneratorsv2 transforms (per sample, torch tensors, on the CPU).

The transforms take `{"image": C×..., "segmentation": 1×...}` tensors and return the final patch; the sampler
only cuts an enlarged box around it. On CUDA, `longnet.data.batch_augmentation` applies the same recipe to
whole batches on the device instead (the sampler then only crops); both read `augmentation_recipe`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.nnunet.random_binary_operator import ApplyRandomBinaryOperatorTransform
from batchgeneratorsv2.transforms.nnunet.remove_connected_components import (
    RemoveRandomConnectedComponentFromOneHotEncodingTransform)
from batchgeneratorsv2.transforms.nnunet.seg_to_onehot import MoveSegAsOneHotToDataTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

from longnet.data.augmentation_recipe import NNUNET_RECIPE, AugmentationRecipe

ANISO_THRESHOLD = 3  # patch edge ratio above which 3D patches get in-plane ("dummy 2D") spatial augmentation


@dataclass
class SpatialAugConfig:
    """Rotation range, mirror axes, dummy-2D flag and the enlarged patch that leaves room for rotation/scaling."""

    rotation: tuple[float, float]
    mirror_axes: tuple[int, ...]
    dummy_2d: bool
    initial_patch_size: list[int]


def _rotated_extent(vec: np.ndarray, axis: int, angle: float) -> np.ndarray:
    """|vec · R| for a rotation by `angle` about one axis, with nnU-Net's rotation-matrix conventions."""
    c, s = math.cos(angle), math.sin(angle)
    rot = {0: [[1, 0, 0], [0, c, -s], [0, s, c]],
           1: [[c, 0, s], [0, 1, 0], [-s, 0, c]],
           2: [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return np.abs(vec.astype(float) @ np.array(rot))


def enlarged_patch_size(patch: list[int], rotation: tuple[float, float], scale_range=(0.85, 1.25)) -> list[int]:
    """Edge lengths that still cover `patch` after the largest rotation about each axis and the smallest scale."""
    max_angle = min(max(abs(rotation[0]), abs(rotation[1])), math.pi / 2)
    coords = np.asarray(patch, dtype=float)
    final = coords.copy()
    if len(patch) == 3:
        for axis in range(3):
            final = np.maximum(final, _rotated_extent(coords, axis, max_angle))
    else:
        c, s = math.cos(max_angle), math.sin(max_angle)
        rot = np.abs(np.array([c * coords[0] - s * coords[1], s * coords[0] + c * coords[1]]))
        final = np.maximum(final, rot)
    final /= min(scale_range)
    return [int(x) for x in final]


def spatial_aug_config(patch_size: list[int]) -> SpatialAugConfig:
    """nnU-Net's rotation/mirroring/dummy-2D choice for a patch size (2D: ±180°, or ±15° for elongated patches)."""
    deg = math.pi / 180.0
    if len(patch_size) == 2:
        dummy_2d = False
        rot = 15 * deg if max(patch_size) / min(patch_size) > 1.5 else 180 * deg
        mirror = (0, 1)
    else:
        dummy_2d = max(patch_size) / patch_size[0] > ANISO_THRESHOLD
        rot = 180 * deg if dummy_2d else 30 * deg
        mirror = (0, 1, 2)
    rotation = (-rot, rot)
    initial = enlarged_patch_size(list(patch_size[-3:]) if len(patch_size) == 3 else list(patch_size), rotation)
    if dummy_2d:
        initial = [patch_size[0]] + enlarged_patch_size(list(patch_size[1:]), rotation)
    return SpatialAugConfig(rotation, mirror, dummy_2d, initial)


def cascade_transforms(cascade_labels: list[int], num_image_channels: int, train: bool) -> list[BasicTransform]:
    """The previous stage's segmentation (seg channel 1) becomes one-hot input channels after the image, one per
    foreground label; in training it is corrupted (morphology p 0.4, a removed component p 0.2, each per label
    with p 0.5) so the network learns not to copy the coarse stage's mistakes."""
    onehot = list(range(num_image_channels, num_image_channels + len(cascade_labels)))
    out: list[BasicTransform] = [MoveSegAsOneHotToDataTransform(source_channel_idx=1, all_labels=list(cascade_labels),
                                                               remove_channel_from_source=True)]
    if train:
        out += [RandomTransform(ApplyRandomBinaryOperatorTransform(channel_idx=onehot, strel_size=(1, 8),
                                                                   p_per_label=0.5), apply_probability=0.4),
                RandomTransform(RemoveRandomConnectedComponentFromOneHotEncodingTransform(
                    channel_idx=onehot, fill_with_other_class_p=0, dont_do_if_covers_more_than_x_percent=0.15,
                    p_per_label=0.5), apply_probability=0.2)]
    return out


def _label_transforms(regions, ignore_label, ds_scales, cascade: list[BasicTransform] = ()) -> list[BasicTransform]:
    out: list[BasicTransform] = [RemoveLabelTransform(-1, 0), *cascade]
    if regions:
        all_regions = list(regions) + ([ignore_label] if ignore_label is not None else [])
        out.append(ConvertSegmentationToRegionsTransform(regions=all_regions, channel_in_seg=0))
    if ds_scales:
        out.append(DownsampleSegForDSTransform(ds_scales=ds_scales))
    return out


def spatial_transforms(patch_size: list[int], aug: SpatialAugConfig, p_rotation: float = NNUNET_RECIPE.p_rotation,
                       p_scaling: float = NNUNET_RECIPE.p_scaling,
                       scaling: tuple[float, float] = NNUNET_RECIPE.scaling) -> list[BasicTransform]:
    """nnU-Net's rotation/scaling step that cuts the final patch from the centre of the enlarged one.

    Shared by `training_transforms` and `longnet.data.longitudinal_geometry.paired_spatial_augment` so segmentation
    and longitudinal trainers use one spatial recipe (the latter on visits stacked along the channel axis).
    """
    t: list[BasicTransform] = []
    spatial_patch = list(patch_size[1:]) if aug.dummy_2d else list(patch_size)
    if aug.dummy_2d:
        t.append(Convert3DTo2DTransform())
    t.append(SpatialTransform(spatial_patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                              p_rotation=p_rotation, rotation=aug.rotation, p_scaling=p_scaling, scaling=scaling,
                              p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False, mode_seg="bilinear"))
    if aug.dummy_2d:
        t.append(Convert2DTo3DTransform())
    return t


def mirror_transforms(aug: SpatialAugConfig) -> list[BasicTransform]:
    """Random flips along the configured axes, each with probability 0.5 (empty when mirroring is off)."""
    assert NNUNET_RECIPE.p_mirror_per_axis == 0.5  # batchgeneratorsv2's MirrorTransform hard-codes it
    return [MirrorTransform(allowed_axes=aug.mirror_axes)] if aug.mirror_axes else []


def training_transforms(patch_size: list[int], aug: SpatialAugConfig, ds_scales: list | None,
                        use_mask_for_norm: list[bool] | None = None, regions: list | None = None,
                        ignore_label: int | None = None, recipe: AugmentationRecipe = NNUNET_RECIPE,
                        cascade_labels: list[int] | None = None, num_image_channels: int = 1) -> BasicTransform:
    """nnU-Net's training augmentation (probabilities from nnU-Net 2.x, no elastic deformation)."""
    r = recipe
    t: list[BasicTransform] = spatial_transforms(patch_size, aug, r.p_rotation, r.p_scaling, r.scaling)
    ignore_axes = (0,) if aug.dummy_2d else None
    t += [
        RandomTransform(GaussianNoiseTransform(noise_variance=r.noise_sd, p_per_channel=1, synchronize_channels=True),
                        apply_probability=r.p_noise),
        RandomTransform(GaussianBlurTransform(blur_sigma=r.blur_sigma, synchronize_channels=False,
                                              synchronize_axes=False, p_per_channel=r.p_blur_per_channel,
                                              benchmark=True),
                        apply_probability=r.p_blur),
        RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast(r.brightness),
                                                          synchronize_channels=False, p_per_channel=1),
                        apply_probability=r.p_brightness),
        RandomTransform(ContrastTransform(contrast_range=BGContrast(r.contrast), preserve_range=True,
                                          synchronize_channels=False, p_per_channel=1),
                        apply_probability=r.p_contrast),
        RandomTransform(SimulateLowResolutionTransform(scale=r.low_resolution_scale, synchronize_channels=False,
                                                       synchronize_axes=True, ignore_axes=ignore_axes,
                                                       allowed_channels=None,
                                                       p_per_channel=r.p_low_resolution_per_channel),
                        apply_probability=r.p_low_resolution),
        RandomTransform(GammaTransform(gamma=BGContrast(r.gamma), p_invert_image=1, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=r.p_gamma_inverted),
        RandomTransform(GammaTransform(gamma=BGContrast(r.gamma), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=r.p_gamma),
    ]
    t += mirror_transforms(aug)
    if use_mask_for_norm and any(use_mask_for_norm):
        t.append(MaskImageTransform(apply_to_channels=[i for i, m in enumerate(use_mask_for_norm) if m],
                                    channel_idx_in_seg=0, set_outside_to=0))
    cascade = cascade_transforms(cascade_labels, num_image_channels, True) if cascade_labels else []
    t += _label_transforms(regions, ignore_label, ds_scales, cascade)
    return ComposeTransforms(t)


def validation_transforms(ds_scales: list | None, regions: list | None = None, ignore_label: int | None = None,
                          cascade_labels: list[int] | None = None, num_image_channels: int = 1) -> BasicTransform:
    """No augmentation: only label cleanup, the cascade's one-hot input, regions and deep-supervision targets."""
    cascade = cascade_transforms(cascade_labels, num_image_channels, False) if cascade_labels else []
    return ComposeTransforms(_label_transforms(regions, ignore_label, ds_scales, cascade))


def replay(transform: BasicTransform, image, seed: int):
    """Apply `transform` to `image` with the global numpy/torch RNGs seeded by `seed` and restored afterwards: the
    same seed replays the same random parameters on another tensor of the same shape (e.g. another visit)."""
    import torch

    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            np.random.seed(seed)
            torch.manual_seed(seed)
            return transform(image=image.clone())["image"]
    finally:
        np.random.set_state(np_state)
