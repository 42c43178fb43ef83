"""Batches of intra-subject visit pairs for LongRep: one crop window and one geometric transform for both
visits (voxel correspondence is what the patchwise loss compares), then the same intensity corruption
replayed on both (the official code's default). The uncorrupted, geometrically augmented crop is the
denoising target.

Visits are expected on one grid (preprocess with intra-subject alignment, `--align`). Unaligned visits with
different shapes are centre-padded to a common grid with a one-time warning, so training still runs.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.local.brightness_gradient import BrightnessGradientAdditiveTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from longnet.api import (LongitudinalIndex, PairDraw, SpatialAugConfig, enlarged_patch_size, paired_spatial_augment,
    random_crop_aligned, replay, spatial_aug_config)

_warned_unaligned = False


@dataclass(frozen=True)
class PairAugmentation:
    """Paper's recipe: flips p=0.5 per axis, affine p=0.5 (±10°, scale ±0.2); intensity: blur p0.3,
    noise p0.25, bias field p0.2, gamma p0.3 (log γ ±0.3). Motion artefacts are not available here."""

    rotation_deg: float = 10.0
    p_affine: float = 0.5
    scaling: tuple[float, float] = (0.8, 1.2)
    mirror: bool = True
    intensity: bool = True


def pair_spatial_config(patch_size: Sequence[int], aug: PairAugmentation) -> SpatialAugConfig:
    """nnU-Net's mirror axes / dummy-2D choice for the patch, with the paper's rotation and scaling range."""
    patch = [int(p) for p in patch_size]
    base = spatial_aug_config(patch)
    r = math.radians(aug.rotation_deg)
    rot = (-r, r)
    if base.dummy_2d:
        initial = [patch[0]] + enlarged_patch_size(patch[1:], rot, aug.scaling)
    else:
        initial = enlarged_patch_size(patch, rot, aug.scaling)
    return SpatialAugConfig(rot, base.mirror_axes if aug.mirror else (), base.dummy_2d, initial)


def _bias_scale(shape, dim) -> float:
    """Smooth field: Gaussian width between 1/6 and the whole patch edge (log-uniform)."""
    return float(np.exp(np.random.uniform(np.log(max(shape[dim] / 6.0, 1.0)), np.log(max(shape[dim], 2)))))


def _bias_strength(_image, _kernel) -> float:
    return float(np.random.uniform(0.2, 0.6) * (1 if np.random.uniform() < 0.5 else -1))


def intensity_transforms() -> ComposeTransforms:
    """The intensity corruption A_int (batchgeneratorsv2; a smooth additive gradient stands in for the bias
    field)."""
    return ComposeTransforms([
        RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.0), synchronize_channels=True,
                                              synchronize_axes=True, p_per_channel=1), apply_probability=0.3),
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                        apply_probability=0.25),
        RandomTransform(BrightnessGradientAdditiveTransform(scale=_bias_scale, loc=(-0.5, 1.5),
                                                            max_strength=_bias_strength, same_for_all_channels=True,
                                                            mean_centered=False), apply_probability=0.2),
        RandomTransform(GammaTransform(gamma=(math.exp(-0.3), math.exp(0.3)), p_invert_image=0,
                                       synchronize_channels=True, p_per_channel=1, p_retain_stats=1),
                        apply_probability=0.3),
    ])


def common_grid(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Arrays unchanged when they share a grid, else centre-padded (with 0) to the element-wise largest shape."""
    global _warned_unaligned
    shapes = {tuple(a.shape[1:]) for a in arrays}
    if len(shapes) == 1:
        return list(arrays)
    if not _warned_unaligned:
        warnings.warn(f"LongRep: visits of a subject are on different grids {sorted(shapes)}; centre-padding them "
                      "to a common grid. Voxel correspondence needs aligned visits (preprocess with --align).")
        _warned_unaligned = True
    target = np.max(np.array([a.shape[1:] for a in arrays]), axis=0)
    out = []
    for a in arrays:
        pad = [(0, 0)] + [((t - s) // 2, (t - s) - (t - s) // 2) for s, t in zip(a.shape[1:], target)]
        out.append(np.pad(a, pad))
    return out


class PairBatchMaker:
    """`make_batch(rng)` → {'x_a','x_b' (corrupted inputs), 'clean_a','clean_b' (targets), 'keys'}."""

    def __init__(self, index: LongitudinalIndex, sampler, patch_size: Sequence[int], batch_size: int,
                 aug: PairAugmentation = PairAugmentation()):
        self.index, self.sampler = index, sampler
        self.patch_size = [int(p) for p in patch_size]
        self.batch_size = int(batch_size)
        self.aug = aug
        self.spatial = pair_spatial_config(self.patch_size, aug)
        self.intensity = intensity_transforms() if aug.intensity else None

    def sample(self, draw: PairDraw, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        a, _, _ = self.index.load(draw.case_a)
        b, _, _ = self.index.load(draw.case_b)
        a, b = common_grid([a, b])
        extra = [i - p for i, p in zip(self.spatial.initial_patch_size, self.patch_size)]
        crops = random_crop_aligned([a, b], self.spatial.initial_patch_size, rng, extra_pad=extra)
        (ca, cb), _ = paired_spatial_augment(crops, rng, self.patch_size, aug=self.spatial,
                                             mirror=bool(self.spatial.mirror_axes), p_rotation=self.aug.p_affine,
                                             p_scaling=self.aug.p_affine, scaling=self.aug.scaling)
        if self.intensity is None:
            return ca, cb, ca, cb
        seed = int(rng.integers(2 ** 31))
        return replay(self.intensity, ca, seed), replay(self.intensity, cb, seed), ca, cb

    def batch_from(self, draws: Sequence[PairDraw], rng: np.random.Generator) -> dict:
        samples = [self.sample(d, rng) for d in draws]
        out = {k: torch.stack([s[i] for s in samples]) for i, k in enumerate(("x_a", "x_b", "clean_a", "clean_b"))}
        out["keys"] = [(d.case_a, d.case_b) for d in draws]
        return out

    def make_batch(self, rng: np.random.Generator) -> dict:
        return self.batch_from([self.sampler.draw(rng) for _ in range(self.batch_size)], rng)


class FrozenPairBatches:
    """Endless cycle over fixed validation batches: batch j uses frozen draws j·B … j·B+B−1 and a generator
    seeded by (seed, j), so every epoch and every model sees identical validation pairs and crops."""

    def __init__(self, maker: PairBatchMaker, draws: Sequence[PairDraw], n_batches: int, seed: int):
        self.maker, self.draws, self.n_batches, self.seed = maker, list(draws), max(1, int(n_batches)), int(seed)

    def __iter__(self):
        bs = self.maker.batch_size
        while True:
            for j in range(self.n_batches):
                draws = [self.draws[(j * bs + i) % len(self.draws)] for i in range(bs)]
                yield self.maker.batch_from(draws, np.random.default_rng([self.seed, j]))
