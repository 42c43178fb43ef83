"""The batched (device) augmentation against the CPU pipeline: same probabilities and ranges (parameters, not
pixels), exact geometry for known parameters, and a training run that uses it on the CPU."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from longnet.data.augmentation import spatial_aug_config, training_transforms
from longnet.data.batch_augmentation import BatchAugmenter, rotation_matrix

PATCH = [16, 20, 16]
N = 20000  # samples drawn for the frequency checks: 4 sigma of p=0.2 is 0.011


def _cpu_pipeline(patch=PATCH):
    """{transform class: (apply probability, transform)} of the CPU recipe, as batchgeneratorsv2 objects."""
    aug = spatial_aug_config(patch)
    compose = training_transforms(patch, aug, None)
    found = {}
    for t in compose.transforms:
        if isinstance(t, RandomTransform):
            key = type(t.transform)
            if key is GammaTransform:
                key = ("gamma", t.transform.p_invert_image)
            found[key] = (t.apply_probability, t.transform)
        elif isinstance(t, SpatialTransform):
            found[SpatialTransform] = (1.0, t)
    return aug, found


def _close(freq: torch.Tensor, p: float) -> None:
    f = float(freq.float().mean())
    assert abs(f - p) < 4 * math.sqrt(p * (1 - p) / freq.numel()) + 1e-9, (f, p)


def _bg_contrast_draws(values: torch.Tensor, rng: tuple[float, float]) -> None:
    """batchgeneratorsv2's BGContrast: inside the range, half the draws below 1."""
    assert float(values.min()) >= rng[0] and float(values.max()) <= rng[1]
    _close(values < 1, 0.5)


def test_probabilities_and_ranges_equal_the_cpu_pipeline():
    aug, cpu = _cpu_pipeline()
    p = BatchAugmenter(PATCH, aug).draw(N, 2, seed=0)
    spatial = cpu[SpatialTransform][1]
    _close(p.rotated, spatial.p_rotation)
    _close(p.scaled, spatial.p_scaling)
    assert spatial.p_synchronize_scaling_across_axes == 1 and p.scales.ndim == 1  # one zoom for all axes
    lo, hi = spatial.rotation
    assert (lo, hi) == aug.rotation and float(p.angles.min()) >= lo and float(p.angles.max()) <= hi
    assert float(p.angles.min()) < lo + 0.01 and float(p.angles.max()) > hi - 0.01 and p.angles.shape[1] == 3
    assert spatial.scaling[0] <= float(p.scales.min()) < spatial.scaling[0] + 0.01
    assert spatial.scaling[1] - 0.01 < float(p.scales.max()) <= spatial.scaling[1]

    prob, noise = cpu[GaussianNoiseTransform]
    _close(p.noise, prob)
    assert noise.synchronize_channels and noise.p_per_channel == 1
    assert float(p.noise_sd.min()) >= noise.noise_variance[0] and float(p.noise_sd.max()) <= noise.noise_variance[1]

    prob, blur = cpu[GaussianBlurTransform]
    _close(p.blur, prob * blur.p_per_channel)  # sample drawn and channel drawn
    assert p.blur_sigma.shape == (N, 2, 3) and not blur.synchronize_axes  # one sigma per axis
    assert float(p.blur_sigma.min()) >= blur.blur_sigma[0] and float(p.blur_sigma.max()) <= blur.blur_sigma[1]

    prob, bright = cpu[MultiplicativeBrightnessTransform]
    _close(p.brightness, prob)
    _bg_contrast_draws(p.brightness_factor, bright.multiplier_range.contrast_range)
    prob, contrast = cpu[ContrastTransform]
    _close(p.contrast, prob)
    assert contrast.preserve_range
    _bg_contrast_draws(p.contrast_factor, contrast.contrast_range.contrast_range)

    prob, lowres = cpu[SimulateLowResolutionTransform]
    _close(p.low_resolution, prob * lowres.p_per_channel)
    assert lowres.synchronize_axes and p.low_resolution_scale.shape == (N, 2)
    assert lowres.scale[0] <= float(p.low_resolution_scale.min()) <= float(p.low_resolution_scale.max()) <= lowres.scale[1]

    for key, apply, values in ((("gamma", 1.0), p.gamma_inverted, p.gamma_inverted_value),
                               (("gamma", 0.0), p.gamma, p.gamma_value)):
        prob, gamma = cpu[key]
        _close(apply, prob)
        assert gamma.p_retain_stats == 1
        _bg_contrast_draws(values, gamma.gamma.contrast_range)
    _close(p.mirror, 0.5)
    assert p.mirror.shape == (N, len(aug.mirror_axes))


def test_draws_are_seeded():
    aug = spatial_aug_config(PATCH)
    a, b, c = (BatchAugmenter(PATCH, aug).draw(8, 1, s) for s in (3, 3, 4))
    assert torch.equal(a.angles, b.angles) and torch.equal(a.mirror, b.mirror)
    assert not torch.equal(a.angles, c.angles)


def _no_aug(augmenter: BatchAugmenter, b: int, c: int):
    p = augmenter.draw(b, c, 0)
    for name in ("rotated", "scaled", "noise", "blur", "brightness", "contrast", "low_resolution", "gamma_inverted",
                 "gamma", "mirror"):
        setattr(p, name, torch.zeros_like(getattr(p, name)))
    return p


def _batch(aug, b=2, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = aug.initial_patch_size
    image = torch.randn((b, c, *shape), generator=g)
    seg = torch.randint(-1, 3, (b, 1, *shape), generator=g).to(torch.int16)
    return image, seg


def test_without_random_choices_the_centre_is_cut_exactly():
    aug = spatial_aug_config(PATCH)
    augmenter = BatchAugmenter(PATCH, aug)
    image, seg = _batch(aug)
    p = _no_aug(augmenter, 2, 2)
    out, target = augmenter(image.clone(), seg.clone(), 0, p)
    lo = [(s - q) // 2 for s, q in zip(aug.initial_patch_size, PATCH)]
    sl = (slice(None), slice(None)) + tuple(slice(a, a + q) for a, q in zip(lo, PATCH))
    assert torch.equal(out, image[sl])
    assert torch.equal(target, torch.where(seg[sl] == -1, 0, seg[sl]))
    # forcing the interpolation path with an identity transform (rotation 0, zoom 1) gives the same crop
    p.rotated[:] = True
    p.angles[:] = 0.0
    out2, target2 = augmenter(image.clone(), seg.clone(), 0, p)
    assert torch.allclose(out2, out, atol=1e-5) and torch.equal(target2, target)


def test_quarter_turn_equals_rot90_for_image_and_labels():
    patch = [12, 12, 12]
    aug = spatial_aug_config(patch)
    augmenter = BatchAugmenter(patch, aug)
    image, seg = _batch(aug, b=1, c=1)
    p = _no_aug(augmenter, 1, 1)
    lo = [(s - q) // 2 for s, q in zip(aug.initial_patch_size, patch)]
    crop = (slice(None), slice(None)) + tuple(slice(a, a + q) for a, q in zip(lo, patch))
    p.rotated[:] = True
    p.angles[:] = torch.tensor([[0.0, 0.0, math.pi / 2]])  # about axis 2: turns the (0, 1) plane
    out, target = augmenter(image.clone(), seg.clone(), 0, p)
    # the turn is about the centre of the cut patch: a quarter turn of the (cubic) crop in the (0, 1) plane
    ref_img = [torch.rot90(image[crop], k, dims=(2, 3)) for k in (1, 3)]
    ref_seg = [torch.rot90(torch.where(seg[crop] == -1, 0, seg[crop]), k, dims=(2, 3)) for k in (1, 3)]
    hits = [k for k in range(2) if torch.allclose(out, ref_img[k], atol=1e-4)]
    assert len(hits) == 1 and torch.equal(target, ref_seg[hits[0]])


def test_rotation_matrix_is_a_scaled_rotation():
    ang = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)
    m = rotation_matrix(ang, torch.tensor([1.3], dtype=torch.float64), 3, False)[0]
    assert torch.allclose(m @ m.T, 1.69 * torch.eye(3, dtype=torch.float64))
    m2 = rotation_matrix(ang, torch.tensor([1.0], dtype=torch.float64), 3, True)[0]  # dummy 2D: axis 0 untouched
    assert m2[0, 0] == 1 and m2[0, 1:].abs().sum() == 0 and torch.allclose(m2 @ m2.T, torch.eye(3, dtype=torch.float64))


def test_intensity_operations_keep_their_invariants():
    aug = spatial_aug_config(PATCH)
    augmenter = BatchAugmenter(PATCH, aug)
    image, seg = _batch(aug, b=4, c=2, seed=1)
    image = image * 0.5 + 2.0
    base, _ = augmenter(image.clone(), seg.clone(), 0, _no_aug(augmenter, 4, 2))
    dims = (2, 3, 4)

    p = _no_aug(augmenter, 4, 2)
    p.contrast[:] = True
    out, _ = augmenter(image.clone(), seg.clone(), 0, p)
    assert torch.all(out.amin(dims) >= base.amin(dims) - 1e-5) and torch.all(out.amax(dims) <= base.amax(dims) + 1e-5)

    for flag in ("gamma", "gamma_inverted"):
        p = _no_aug(augmenter, 4, 2)
        getattr(p, flag)[:] = True
        out, _ = augmenter(image.clone(), seg.clone(), 0, p)
        assert torch.allclose(out.mean(dims), base.mean(dims), atol=1e-4)
        assert torch.allclose(out.std(dims), base.std(dims), atol=1e-4) and not torch.allclose(out, base)

    p = _no_aug(augmenter, 4, 2)
    p.blur[:] = True
    out, _ = augmenter(torch.full_like(image, 3.0), seg.clone(), 0, p)  # a constant image stays constant
    assert torch.allclose(out, torch.full_like(out, 3.0), atol=1e-5)
    out, _ = augmenter(image.clone(), seg.clone(), 0, p)
    assert float(out.std()) < float(base.std())  # and noise is smoothed

    p = _no_aug(augmenter, 4, 2)
    p.noise[:] = True
    p.noise_sd[:] = 0.05
    out, _ = augmenter(image.clone(), seg.clone(), 0, p)
    assert abs(float((out - base).std()) - 0.05) < 0.005

    p = _no_aug(augmenter, 4, 2)
    p.mirror[0, 0] = True
    out, target = augmenter(image.clone(), seg.clone(), 0, p)
    assert torch.equal(out[0], base[0].flip(1)) and torch.equal(out[1:], base[1:])


@pytest.mark.parametrize("regions", [None, [[1, 2], [2]]])
def test_targets_have_the_cpu_pipeline_shapes_and_types(regions):
    aug = spatial_aug_config(PATCH)
    ds = [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    use_mask = [True, False]
    cpu = training_transforms(PATCH, aug, ds, use_mask, regions)
    augmenter = BatchAugmenter(PATCH, aug, ds, use_mask, regions)
    image, seg = _batch(aug, b=3, c=2, seed=2)
    torch.manual_seed(0)
    ref = cpu(image=image[0].clone(), segmentation=seg[0].clone())
    out, targets = augmenter(image.clone(), seg.clone(), seed=5)
    assert out.shape == (3, *ref["image"].shape) and out.dtype == ref["image"].dtype
    for t, r in zip(targets, ref["segmentation"]):
        assert t.shape == (3, *r.shape) and t.dtype == r.dtype
    if regions is None:
        assert set(np.unique(targets[0].numpy())) <= {0, 1, 2}
    # nnU-Net's mask for normalisation: channel 0 is zero where the label was -1 (outside the image)
    p = _no_aug(augmenter, 3, 2)
    out, _ = augmenter(image.clone(), seg.clone(), 0, p)
    lo = [(s - q) // 2 for s, q in zip(aug.initial_patch_size, PATCH)]
    crop = (slice(None), slice(0, 1)) + tuple(slice(a, a + q) for a, q in zip(lo, PATCH))
    outside = seg[crop] < 0
    ref = image[(slice(None), slice(None)) + crop[2:]]
    assert torch.equal(out[:, :1], ref[:, :1].masked_fill(outside, 0.0)) and bool(outside.any())
    assert torch.equal(out[:, 1:], ref[:, 1:])  # channel 1 is not normalised inside a mask


def test_dummy_2d_and_2d_patches():
    aug3 = spatial_aug_config([8, 64, 48])  # anisotropic: in-plane rotation only
    assert aug3.dummy_2d
    a = BatchAugmenter([8, 64, 48], aug3)
    p = a.draw(4, 1, 0)
    assert p.angles.shape == (4, 1)
    image = torch.randn(2, 1, *aug3.initial_patch_size)
    out, _ = a(image, torch.zeros(2, 1, *aug3.initial_patch_size, dtype=torch.int16), 1)
    assert out.shape == (2, 1, 8, 64, 48)
    aug2 = spatial_aug_config([40, 48])
    a2 = BatchAugmenter([40, 48], aug2, [[1, 1], [0.5, 0.5]])
    for seed in range(4):
        out, t = a2(torch.randn(3, 1, *aug2.initial_patch_size), torch.ones(3, 1, *aug2.initial_patch_size,
                                                                            dtype=torch.int16), seed)
        assert out.shape == (3, 1, 40, 48) and t[1].shape == (3, 1, 20, 24) and torch.isfinite(out).all()


def test_training_with_batched_augmentation_on_cpu(tmp_path, monkeypatch, capsys):
    from longnet.cli.train import main as train_main
    from tiny_seg_dataset import DATASET, fold_dir, make_tiny_dataset, set_env

    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    args = [DATASET, "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1",
            "--disable-final-validation", "-device", "cpu", "--augmentation", "gpu"]
    assert train_main(args) == 0
    assert "training augmentation: batched on cpu" in capsys.readouterr().out
    ckpt = torch.load(fold_dir(tmp_path) / "checkpoint_final.pth", weights_only=True)
    assert np.isfinite(ckpt["logging"]["train_loss"][0])


def test_known_label_values_give_the_same_labels_as_torch_unique():
    """The trainer passes every possible label value (no per-batch torch.unique sync); absent labels change nothing."""
    aug = spatial_aug_config(PATCH)
    image, seg = _batch(aug, b=4, c=1, seed=3)
    seg[seg == 1] = 0  # label 1 absent from the batch
    plain, known = BatchAugmenter(PATCH, aug), BatchAugmenter(PATCH, aug, label_values=range(-1, 4))
    p = plain.draw(4, 1, 0)
    p.rotated[:] = True
    _, a = plain(image.clone(), seg.clone(), 0, p)
    _, b = known(image.clone(), seg.clone(), 0, p)
    assert torch.equal(a, b)
