"""nnU-Net's training augmentation applied to a whole batch on the device (the default on CUDA).

nnU-Net augments each sample on the CPU, which starves a modern GPU unless many cores feed it. Here the loader
only cuts the enlarged patches; `BatchAugmenter` then rotates/scales (one `grid_sample` for the batch), adds
noise, blurs, changes brightness/contrast, simulates low resolution, applies gamma, mirrors, and builds the
deep-supervision targets where the batch already lives. Probabilities and ranges come from
`augmentation_recipe.NNUNET_RECIPE`, the table the CPU pipeline is built from.

Random parameters are drawn up front on the CPU from the batch's seed (`draw`), so a batch's augmentation is
reproducible, identical on CPU and GPU, and testable without pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from longnet.data.augmentation import SpatialAugConfig
from longnet.data.augmentation_recipe import NNUNET_RECIPE, AugmentationRecipe

EPS = 1e-7


@dataclass
class AugmentationParams:
    """Every random choice for one batch (CPU tensors; B samples, C channels, D spatial axes)."""

    rotated: torch.Tensor  # (B,) bool
    angles: torch.Tensor  # (B, 3) radians about axes 0, 1, 2 (3D) or (B, 1) in-plane (2D and dummy 2D)
    scaled: torch.Tensor  # (B,) bool
    scales: torch.Tensor  # (B,) zoom factor, the same on every axis
    noise: torch.Tensor  # (B,) bool
    noise_sd: torch.Tensor  # (B,)
    blur: torch.Tensor  # (B, C) bool: sample drawn and channel drawn
    blur_sigma: torch.Tensor  # (B, C, D)
    brightness: torch.Tensor  # (B,) bool
    brightness_factor: torch.Tensor  # (B, C)
    contrast: torch.Tensor  # (B,) bool
    contrast_factor: torch.Tensor  # (B, C)
    low_resolution: torch.Tensor  # (B, C) bool
    low_resolution_scale: torch.Tensor  # (B, C)
    gamma_inverted: torch.Tensor  # (B,) bool
    gamma_inverted_value: torch.Tensor  # (B, C)
    gamma: torch.Tensor  # (B,) bool
    gamma_value: torch.Tensor  # (B, C)
    mirror: torch.Tensor  # (B, len(mirror_axes)) bool

    @property
    def spatial(self) -> torch.Tensor:
        return self.rotated | self.scaled


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _bg_contrast(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    """batchgeneratorsv2's BGContrast: half the draws from [lo, 1), half from [1, hi) (when lo < 1)."""
    below = torch.rand(shape, generator=g) < 0.5
    low, high = _uniform(g, shape, lo, 1.0), _uniform(g, shape, max(lo, 1.0), hi)
    return torch.where(below & torch.tensor(lo < 1), low, high)


def _chance(g: torch.Generator, shape: tuple[int, ...], p: float) -> torch.Tensor:
    return torch.rand(shape, generator=g) < p


def rotation_matrix(angles: torch.Tensor, scale: torch.Tensor, dims: int, dummy_2d: bool) -> torch.Tensor:
    """(B, dims, dims) maps output to source coordinates: Rz·Ry·Rx·S in 3D, R·S in-plane (2D, dummy 2D)."""
    b = angles.shape[0]
    if dims == 2 or dummy_2d:
        a = angles[:, -1]
        c, s = torch.cos(a), torch.sin(a)
        plane = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2) * scale[:, None, None]
        if dims == 2:
            return plane
        out = torch.zeros(b, 3, 3, dtype=plane.dtype)
        out[:, 0, 0] = 1.0
        out[:, 1:, 1:] = plane
        return out
    ca, sa = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones(b, dtype=angles.dtype), torch.zeros(b, dtype=angles.dtype)

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx = mat([[one, zero, zero], [zero, ca[:, 0], -sa[:, 0]], [zero, sa[:, 0], ca[:, 0]]])
    ry = mat([[ca[:, 1], zero, sa[:, 1]], [zero, one, zero], [-sa[:, 1], zero, ca[:, 1]]])
    rz = mat([[ca[:, 2], -sa[:, 2], zero], [sa[:, 2], ca[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx * scale[:, None, None]


class BatchAugmenter:
    """Batched, seeded nnU-Net augmentation: (B×C×enlarged patch, B×1×enlarged seg) → final patch + targets."""

    def __init__(self, patch_size: list[int], aug: SpatialAugConfig, ds_scales: list | None = None,
                 use_mask_for_norm: list[bool] | None = None, regions: list | None = None,
                 ignore_label: int | None = None, recipe: AugmentationRecipe = NNUNET_RECIPE,
                 label_values: Sequence[int] | None = None):
        self.patch_size = [int(p) for p in patch_size]
        # every value a label map can hold (-1 = outside the image); given, the spatial step needs no
        # torch.unique, which would make the host wait for the device on every batch
        self.label_values = sorted(label_values) if label_values is not None else None
        self.aug = aug
        self.ds_scales = ds_scales
        self.mask_channels = [i for i, m in enumerate(use_mask_for_norm or []) if m]
        self.regions = list(regions) + ([ignore_label] if ignore_label is not None else []) if regions else None
        self.recipe = recipe
        self._grids: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ parameters
    def draw(self, batch_size: int, num_channels: int, seed: int) -> AugmentationParams:
        """All random choices of one batch from `seed` (independent of device and of the data)."""
        g = torch.Generator().manual_seed(int(seed) % 2 ** 63)
        r, b, c, d = self.recipe, batch_size, num_channels, len(self.patch_size)
        n_angles = 1 if (d == 2 or self.aug.dummy_2d) else 3
        lo, hi = self.aug.rotation
        return AugmentationParams(
            rotated=_chance(g, (b,), r.p_rotation), angles=_uniform(g, (b, n_angles), lo, hi),
            scaled=_chance(g, (b,), r.p_scaling), scales=_uniform(g, (b,), *r.scaling),
            noise=_chance(g, (b,), r.p_noise), noise_sd=_uniform(g, (b,), *r.noise_sd),
            blur=_chance(g, (b, 1), r.p_blur) & _chance(g, (b, c), r.p_blur_per_channel),
            blur_sigma=_uniform(g, (b, c, d), *r.blur_sigma),
            brightness=_chance(g, (b,), r.p_brightness), brightness_factor=_bg_contrast(g, (b, c), *r.brightness),
            contrast=_chance(g, (b,), r.p_contrast), contrast_factor=_bg_contrast(g, (b, c), *r.contrast),
            low_resolution=_chance(g, (b, 1), r.p_low_resolution) & _chance(g, (b, c), r.p_low_resolution_per_channel),
            low_resolution_scale=_uniform(g, (b, c), *r.low_resolution_scale),
            gamma_inverted=_chance(g, (b,), r.p_gamma_inverted), gamma_inverted_value=_bg_contrast(g, (b, c), *r.gamma),
            gamma=_chance(g, (b,), r.p_gamma), gamma_value=_bg_contrast(g, (b, c), *r.gamma),
            mirror=_chance(g, (b, len(self.aug.mirror_axes)), r.p_mirror_per_axis))

    # ------------------------------------------------------------------ application
    @torch.no_grad()
    def __call__(self, image: torch.Tensor, seg: torch.Tensor, seed: int,
                 params: AugmentationParams | None = None) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        """Augment a batch on its device; returns (image, target or deep-supervision target list)."""
        p = params or self.draw(image.shape[0], image.shape[1], seed)
        gen = torch.Generator(device=image.device).manual_seed(int(seed) % 2 ** 63)
        image, seg = self.spatial(image.float(), seg, p)
        image = self.intensity(image, p, gen)
        image, seg = self.mirror(image, seg, p)
        if self.mask_channels:
            outside = seg < 0
            image[:, self.mask_channels] = image[:, self.mask_channels].masked_fill(outside, 0.0)
        return image.contiguous(), self.targets(seg)

    def _base_grid(self, device: torch.device) -> torch.Tensor:
        """Output voxel coordinates relative to the patch centre, shape (*patch, D)."""
        key = (str(device), tuple(self.patch_size))
        if key not in self._grids:
            axes = [torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2 for p in self.patch_size]
            self._grids[key] = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
        return self._grids[key]

    def spatial(self, image: torch.Tensor, seg: torch.Tensor, p: AugmentationParams
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate/scale about the centre of the enlarged patch and cut the final patch (bilinear; seg by
        interpolating each label's indicator and taking the largest, as nnU-Net does)."""
        src_shape = image.shape[2:]
        offset = [(s - q) // 2 for s, q in zip(src_shape, self.patch_size)]
        if not bool(p.spatial.any()):
            sl = (slice(None), slice(None)) + tuple(slice(o, o + q) for o, q in zip(offset, self.patch_size))
            return image[sl], seg[sl]
        d = len(self.patch_size)
        angles = torch.where(p.rotated[:, None], p.angles, torch.zeros_like(p.angles))
        scales = torch.where(p.scaled, p.scales, torch.ones_like(p.scales))
        affine = rotation_matrix(angles, scales, d, self.aug.dummy_2d).to(image.device, torch.float32)
        centre = torch.tensor([o + (q - 1) / 2 for o, q in zip(offset, self.patch_size)], device=image.device)
        size = torch.tensor([s - 1 for s in src_shape], dtype=torch.float32, device=image.device).clamp(min=1)
        base = self._base_grid(image.device)
        src = torch.einsum("...j,bij->b...i", base, affine) + centre
        grid = (2 * src / size - 1).flip(-1)  # grid_sample wants (x, y, z) = (last axis, ..., first axis)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        labels = (torch.tensor(self.label_values, device=seg.device) if self.label_values is not None
                  else torch.unique(seg))
        onehot = torch.cat([(seg == v).float() for v in labels], 1)
        scores = F.grid_sample(onehot, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        best, idx = scores.max(1, keepdim=True)
        new_seg = torch.where(best > 0, labels.to(seg.dtype)[idx], torch.zeros_like(idx, dtype=seg.dtype))
        return out, new_seg

    def intensity(self, x: torch.Tensor, p: AugmentationParams, gen: torch.Generator) -> torch.Tensor:
        dev, nd = x.device, x.ndim - 2
        bcast = (slice(None), slice(None)) + (None,) * nd

        def per_bc(t: torch.Tensor) -> torch.Tensor:
            return t.to(dev, torch.float32)[bcast]

        idx = p.noise.nonzero().flatten()
        if idx.numel():
            on_dev = idx.to(dev)
            noise = torch.randn(x[on_dev].shape, generator=gen, device=dev)
            x[on_dev] += noise * p.noise_sd[idx].to(dev, torch.float32)[(slice(None),) + (None,) * (nd + 1)]
        if bool(p.blur.any()):
            x = self._blur(x, p)
        if bool(p.brightness.any()):
            factor = torch.where(p.brightness[:, None], p.brightness_factor, torch.ones_like(p.brightness_factor))
            x = x * per_bc(factor)
        if bool(p.contrast.any()):
            x = self._contrast(x, p)
        if bool(p.low_resolution.any()):
            x = self._low_resolution(x, p)
        for apply, values, invert in ((p.gamma_inverted, p.gamma_inverted_value, True),
                                      (p.gamma, p.gamma_value, False)):
            if bool(apply.any()):
                x = _gamma_retain_stats(x, apply.to(dev), per_bc(values), invert)
        return x

    def _blur(self, x: torch.Tensor, p: AugmentationParams) -> torch.Tensor:
        """Separable Gaussian per (sample, channel, axis) sigma, reflect padding; one grouped conv per axis."""
        b, c = x.shape[:2]
        sel = p.blur.flatten().nonzero().flatten().to(x.device)
        sigmas = p.blur_sigma.reshape(b * c, -1)[p.blur.flatten()].to(x.device, torch.float32)  # (n, D)
        flat = x.reshape(b * c, *x.shape[2:])
        chans = flat[sel][None]  # (1, n, *S)
        half = max(1, math.ceil(3 * self.recipe.blur_sigma[1]))
        taps = torch.arange(-half, half + 1, dtype=torch.float32, device=x.device)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
        for axis in range(x.ndim - 2):
            k = torch.exp(-0.5 * (taps[None] / sigmas[:, axis:axis + 1]) ** 2)
            k = k / k.sum(1, keepdim=True)
            shape = [k.shape[0], 1] + [1] * (x.ndim - 2)
            shape[2 + axis] = k.shape[1]
            pad = [0, 0] * (x.ndim - 2)
            pad[2 * (x.ndim - 3 - axis)], pad[2 * (x.ndim - 3 - axis) + 1] = half, half
            mode = "reflect" if x.shape[2 + axis] > half else "replicate"
            chans = conv(F.pad(chans, pad, mode=mode), k.reshape(shape), groups=k.shape[0])
        flat = flat.clone()
        flat[sel] = chans[0]
        return flat.reshape(x.shape)

    def _contrast(self, x: torch.Tensor, p: AugmentationParams) -> torch.Tensor:
        """(x - mean)·f + mean, clipped to the channel's original range (nnU-Net's preserve_range)."""
        dims = tuple(range(2, x.ndim))
        mean = x.mean(dims, keepdim=True)
        lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
        f = p.contrast_factor.to(x.device, torch.float32)[(slice(None), slice(None)) + (None,) * (x.ndim - 2)]
        changed = torch.minimum(torch.maximum((x - mean) * f + mean, lo), hi)
        return torch.where(p.contrast.to(x.device)[(slice(None),) + (None,) * (x.ndim - 1)], changed, x)

    def _low_resolution(self, x: torch.Tensor, p: AugmentationParams) -> torch.Tensor:
        """Nearest-neighbour downsampling by the drawn factor, then linear upsampling back (per channel)."""
        shape = x.shape[2:]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
        x = x.clone()
        for bi, ci in p.low_resolution.nonzero().tolist():
            s = float(p.low_resolution_scale[bi, ci])
            small = [n if (self.aug.dummy_2d and a == 0) else max(1, round(n * s)) for a, n in enumerate(shape)]
            down = F.interpolate(x[bi, ci][None, None], size=small, mode="nearest-exact")
            x[bi, ci] = F.interpolate(down, size=list(shape), mode=mode)[0, 0]
        return x

    def mirror(self, image: torch.Tensor, seg: torch.Tensor, p: AugmentationParams
               ) -> tuple[torch.Tensor, torch.Tensor]:
        for k, axis in enumerate(self.aug.mirror_axes):
            idx = p.mirror[:, k].nonzero().flatten().to(image.device)
            if idx.numel():
                image = image.index_copy(0, idx, image[idx].flip(2 + axis))
                seg = seg.index_copy(0, idx, seg[idx].flip(2 + axis))
        return image, seg

    def targets(self, seg: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Labels with -1 → 0, regions as channels (ignore label last), downsampled for deep supervision."""
        seg = torch.where(seg == -1, torch.zeros_like(seg), seg)
        if self.regions:
            seg = torch.cat([_in_region(seg[:, 0], r)[:, None] for r in self.regions], 1)  # bool, as on the CPU
        if not self.ds_scales:
            return seg
        out = []
        for scale in self.ds_scales:
            if all(s == 1 for s in scale):
                out.append(seg)
                continue
            size = [round(n * s) for n, s in zip(seg.shape[2:], scale)]
            out.append(F.interpolate(seg.float(), size=size, mode="nearest-exact").to(seg.dtype))
        return out


def _in_region(seg: torch.Tensor, region) -> torch.Tensor:
    values = region if isinstance(region, (list, tuple)) else [region]
    return torch.isin(seg, torch.as_tensor(list(values), device=seg.device, dtype=seg.dtype))


def _gamma_retain_stats(x: torch.Tensor, apply: torch.Tensor, gamma: torch.Tensor, invert: bool) -> torch.Tensor:
    """x ↦ range·((x - min)/range)^γ + min per channel, then the channel's mean and std restored."""
    dims = tuple(range(2, x.ndim))
    y = -x if invert else x
    mean, std = y.mean(dims, keepdim=True), y.std(dims, keepdim=True)
    lo, hi = y.amin(dims, keepdim=True), y.amax(dims, keepdim=True)
    rng = hi - lo
    y = ((y - lo) / rng.clamp(min=EPS)).clamp(min=0) ** gamma * rng + lo
    y = (y - y.mean(dims, keepdim=True)) * (std / y.std(dims, keepdim=True).clamp(min=EPS)) + mean
    if invert:
        y = -y
    return torch.where(apply[(slice(None),) + (None,) * (x.ndim - 1)], y, x)
