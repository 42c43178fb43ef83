"""Sliding-window invariants: tile placement, Gaussian map, constant networks, padding, mirroring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from longnet.inference.sliding_window import (compute_steps, gaussian_importance_map, mirror_combinations,
                                              pad_to_min_size, predict_sliding_window, tile_slices)


class ConstantNet(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)

    def forward(self, x):
        shape = (x.shape[0], len(self.values), *x.shape[2:])
        return self.values.view(1, -1, *([1] * (x.ndim - 2))).expand(shape).clone()


class CoordNet(torch.nn.Module):
    """Output = input (position-dependent, not flip-equivariant unless the flips are undone correctly)."""

    def forward(self, x):
        return torch.cat([x, -x], 1)


@pytest.mark.parametrize("image,tile,step", [(100, 40, 0.5), (40, 40, 0.5), (41, 40, 0.5), (97, 32, 0.25),
                                             (64, 16, 1.0), (513, 128, 0.5)])
def test_steps_cover_image(image, tile, step):
    steps = compute_steps([image], [tile], step)[0]
    assert steps[0] == 0 and steps[-1] == image - tile
    assert len(steps) == int(np.ceil((image - tile) / (tile * step))) + 1
    assert all(b - a <= tile * step + 1 for a, b in zip(steps[:-1], steps[1:]))
    covered = np.zeros(image, bool)
    for s in steps:
        covered[s:s + tile] = True
    assert covered.all()


def test_known_nnunet_steps():
    assert compute_steps([100], [40], 0.5) == [[0, 20, 40, 60]]
    assert compute_steps([41, 47], [40, 56 - 9], 0.5) == [[0, 1], [0]]
    assert len(tile_slices((5, 30, 30), (16, 16))) == 5 * 9  # 2D patch on a 3D volume: per slice


def test_gaussian_map_properties():
    g = gaussian_importance_map((40, 56, 40)).numpy()
    assert g.max() == pytest.approx(1.0) and g.min() > 0
    assert np.unravel_index(g.argmax(), g.shape) == (20, 28, 20)
    # separable, sigma = patch / 8 along each axis
    line = g[:, 28, 20]
    assert line[20 + 5] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert np.allclose(g[20 - 3, 28, 20], g[20 + 3, 28, 20])
    g16 = gaussian_importance_map((64, 64, 64), dtype=torch.float16)
    assert (g16 > 0).all()


@pytest.mark.parametrize("shape,patch,mirror", [((1, 20, 23, 17), (8, 8, 8), (0, 1, 2)),
                                                ((2, 5, 7, 6), (8, 8, 8), None),
                                                ((1, 3, 19, 21), (8, 8), (0, 1))])
def test_constant_network_gives_constant_output(shape, patch, mirror):
    values = [0.25, -1.5, 3.0]
    net = ConstantNet(values)
    out = predict_sliding_window(net, torch.randn(shape), patch, 3, 0.5, mirror, accumulate_dtype=torch.float32,
                                 tile_batch_size=3)
    assert out.shape == (3, *shape[1:]) and out.dtype == torch.float32
    for c, v in enumerate(values):
        assert torch.allclose(out[c], torch.full_like(out[c], v), atol=1e-6)


def test_fp16_accumulation_close_where_weights_are_representable():
    # nnU-Net's fp16 sums lose precision only where a voxel is covered by nothing but far tile corners
    # (weights below fp16's normal range); a padded single tile keeps the image in the well-weighted centre.
    values = [0.25, -1.5, 3.0]
    out = predict_sliding_window(ConstantNet(values), torch.randn(1, 12, 12, 12), (16, 16, 16), 3, 0.5, (0, 1, 2))
    for c, v in enumerate(values):
        assert torch.allclose(out[c], torch.full_like(out[c], v), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("max_samples", [None, 1, 3])  # all copies in one call, one per call, groups of 3
def test_identity_network_reproduces_input_with_mirroring_and_padding(max_samples):
    x = torch.randn(1, 6, 30, 13)  # smaller than the patch along z and x -> padded, then cropped back
    out = predict_sliding_window(CoordNet(), x, (8, 16, 16), 2, 0.5, (0, 1, 2), accumulate_dtype=torch.float32,
                                 max_samples_per_call=max_samples)
    assert torch.allclose(out[0], x[0], atol=1e-5) and torch.allclose(out[1], -x[0], atol=1e-5)


def test_padding_and_mirror_helpers():
    x = torch.ones(1, 3, 10, 5)
    padded, revert = pad_to_min_size(x, (6, 8, 8))
    assert padded.shape == (1, 6, 10, 8) and torch.equal(padded[revert], x)
    assert padded[0, 0].sum() == 0 and padded[0, :, :, 0].sum() == 0  # 1 below, 2 above along z; 1/2 along x
    assert len(mirror_combinations((0, 1, 2), 3)) == 7 and len(mirror_combinations((0, 1), 2)) == 3
    assert mirror_combinations(None, 3) == []
