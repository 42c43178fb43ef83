"""The dimensional-collapse diagnostic of LongRep pretraining (effective rank of U-Net stage outputs)."""
from __future__ import annotations

import pytest
import torch

from longnet_longrep.diagnostics import effective_rank, stage_output_ranks


def test_effective_rank_counts_independent_channels():
    g = torch.Generator().manual_seed(0)
    independent = torch.randn(2, 6, 20, 20, 20, generator=g)
    assert effective_rank(independent) == pytest.approx(6.0, rel=0.02)
    one_signal = torch.randn(2, 1, 10, 10, 10, generator=g) * torch.arange(1, 7.0).view(1, 6, 1, 1, 1)
    assert effective_rank(one_signal) == pytest.approx(1.0, abs=1e-6)
    two_strong = torch.cat([10 * independent[:, :2], 0.01 * independent[:, 2:]], dim=1)
    assert 1.9 < effective_rank(two_strong) < 2.1
    assert effective_rank(torch.zeros(1, 3, 4, 4)) == 0.0


def test_stage_output_ranks_of_a_planned_unet():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(0)
    net = PlainConvUNet(2, 3, (4, 8, 16), torch.nn.Conv3d, 3, (1, 2, 2), (2, 2, 2), 3, (2, 2), False,
                        torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU)
    net.train()
    images = [torch.randn(2, 13, 18, 17), torch.randn(2, 12, 16, 16)]  # cropped to multiples of 4 inside
    ranks = stage_output_ranks(net, images)
    assert set(ranks) == {"encoder.stages.0", "encoder.stages.1", "encoder.stages.2", "decoder.stages.0",
                          "decoder.stages.1"}
    assert ranks["encoder.stages.2"][1] == 16 and ranks["decoder.stages.1"][1] == 4
    assert all(0 < r <= c + 1e-6 for r, c in ranks.values())
    assert net.training  # the mode is restored
    # a network whose first stage outputs one signal in every channel has rank 1 there
    with torch.no_grad():
        conv = net.encoder.stages[0][0].convs[1].conv
        conv.weight.copy_(conv.weight[:1].expand_as(conv.weight))
    assert stage_output_ranks(net, images)["encoder.stages.0"][0] == pytest.approx(1.0, abs=1e-3)
