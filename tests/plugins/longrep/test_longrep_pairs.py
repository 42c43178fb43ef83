"""LongRep pair batches: one crop window and one geometric transform for both visits, the same intensity
corruption replayed on both, fixed validation batches, and the unaligned-visit fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from longnet_longrep.pairs import (FrozenPairBatches, PairAugmentation, PairBatchMaker, common_grid,
                                   intensity_transforms, replay)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


class _Index:
    """Two visits of one subject: b = a + 5 everywhere (so any shared geometry keeps b − a = 5)."""

    def __init__(self, shape=(40, 48, 40)):
        rng = np.random.default_rng(0)
        self.a = rng.normal(size=(1, *shape)).astype(np.float32)
        self.arrays = {"a": self.a, "b": self.a + 5.0}

    def load(self, case):
        return self.arrays[case], None, {}


class _Draw:
    case_a, case_b = "a", "b"


class _Sampler:
    mode = "random"

    def draw(self, rng):
        return _Draw()


def test_pair_members_share_crop_and_geometry():
    aug = PairAugmentation(p_affine=0.0, intensity=False)  # flips + crop only: b − a stays exactly 5
    maker = PairBatchMaker(_Index(), _Sampler(), [16, 16, 16], 3, aug)
    batch = maker.make_batch(np.random.default_rng(1))
    assert batch["x_a"].shape == (3, 1, 16, 16, 16)
    assert torch.allclose(batch["x_b"] - batch["x_a"], torch.full_like(batch["x_a"], 5.0), atol=1e-5)
    assert not torch.equal(batch["x_a"][0], batch["x_a"][1])  # items differ (own crops/flips)


def test_affine_transform_is_shared_and_intensity_corruption_replayed():
    index = _Index()
    index.arrays["b"] = index.a.copy()  # identical visits → identical outputs under shared randomness
    maker = PairBatchMaker(index, _Sampler(), [16, 16, 16], 2, PairAugmentation(p_affine=1.0))
    for seed in range(3):
        batch = maker.make_batch(np.random.default_rng(seed))
        assert torch.equal(batch["clean_a"], batch["clean_b"])
        assert torch.equal(batch["x_a"], batch["x_b"])
    # the corruption does change the input (denoising target = clean crop)
    img = torch.randn(1, 16, 16, 16)
    changed = [not torch.equal(replay(intensity_transforms(), img, s), img) for s in range(20)]
    assert any(changed) and not all(changed)


def test_frozen_validation_batches_repeat_every_epoch():
    maker = PairBatchMaker(_Index(), _Sampler(), [16, 16, 16], 2, PairAugmentation())
    it = iter(FrozenPairBatches(maker, [_Draw()] * 4, n_batches=2, seed=0))
    first = [next(it) for _ in range(2)]
    again = [next(it) for _ in range(2)]
    for f, g in zip(first, again):
        assert torch.equal(f["x_a"], g["x_a"]) and torch.equal(f["clean_b"], g["clean_b"])
    assert not torch.equal(first[0]["x_a"], first[1]["x_a"])


def test_unaligned_visits_are_padded_to_a_common_grid(monkeypatch):
    monkeypatch.setattr("longnet_longrep.pairs._warned_unaligned", False)  # warned once per process
    a, b = np.ones((1, 10, 12, 10), np.float32), np.ones((1, 12, 11, 10), np.float32)
    with pytest.warns(UserWarning, match="different grids"):
        pa, pb = common_grid([a, b])
    assert pa.shape == pb.shape == (1, 12, 12, 10)
    assert common_grid([a, a])[0] is a
