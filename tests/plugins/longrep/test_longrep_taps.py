"""LongRep feature taps on planned U-Nets: the expected layers for two different plans (plain and residual
encoder), the shared voxel positions, and segmentation-compatible parameter names."""
from __future__ import annotations

import copy

import pytest
import torch

from longnet.planning.network import build_network_from_architecture
from longnet_longrep.model import HEAD_PREFIXES, LongRepPretrainModel
from longnet_longrep.taps import FeatureTaps, find_taps
from tiny_seg_dataset import tiny_plans


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


def plain_arch() -> dict:
    """3 stages (4/8/16 features), PlainConvUNet."""
    return tiny_plans()["configurations"]["3d_fullres"]["architecture"]


def resenc_arch() -> dict:
    """4 stages (4/8/16/16), ResidualEncoderUNet with anisotropic first stride, as a ResEnc plan would give."""
    arch = copy.deepcopy(plain_arch())
    ak = arch["arch_kwargs"]
    ak.pop("n_conv_per_stage")
    ak.update(n_stages=4, features_per_stage=[4, 8, 16, 16], kernel_sizes=[[3, 3, 3]] * 4,
              strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 2, 2, 2],
              n_conv_per_stage_decoder=[1, 1, 1])
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    return arch


def test_plain_unet_taps():
    net = build_network_from_architecture(plain_arch(), 1, 3, deep_supervision=False)
    taps = {t.name: t for t in find_taps(net)}
    assert list(taps) == ["enc0", "enc1", "bottleneck", "enc1_last", "dec0"]
    assert taps["enc0"].module_name == "encoder.stages.0.0.convs.0.conv"
    assert taps["enc1"].module_name == "encoder.stages.1.0.convs.0.conv"
    assert taps["bottleneck"].module_name == "encoder.stages.2.0.convs.0.conv"
    assert taps["enc1_last"].module_name == "encoder.stages.1.0.convs.1.conv"
    assert taps["dec0"].module_name == "decoder.stages.0.convs.0.conv"
    assert [taps[k].channels for k in taps] == [4, 8, 16, 8, 8]
    assert taps["bottleneck"].downsampling == (4, 4, 4) and taps["dec0"].downsampling == (2, 2, 2)
    assert [k for k, t in taps.items() if t.similarity] == ["enc0", "enc1", "bottleneck", "dec0"]
    assert [k for k, t in taps.items() if t.regularised] == ["dec0"]
    assert taps["enc1_last"].index_group == taps["dec0"].index_group  # L_O compares the same positions


def test_residual_encoder_unet_taps_and_feature_shapes():
    net = build_network_from_architecture(resenc_arch(), 2, 3, deep_supervision=False)
    taps = find_taps(net)
    by = {t.name: t for t in taps}
    assert list(by) == ["enc0", "enc1", "enc2", "bottleneck", "enc2_last", "dec0", "dec1"]
    assert by["enc1"].module_name == "encoder.stages.1.blocks.0.conv1.conv"
    assert by["enc2_last"].module_name == "encoder.stages.2.blocks.1.conv2.conv"  # last block, not its shortcut
    assert by["dec0"].downsampling == (2, 4, 4) and by["dec1"].downsampling == (1, 2, 2)
    assert by["bottleneck"].downsampling == (4, 8, 8)
    ft = FeatureTaps(net, taps, num_patches=12)
    x = torch.randn(3, 2, 8, 16, 16)
    ft.start()
    net(x)
    feats = ft.stop()
    assert feats["bottleneck"].shape == (3, 2 * 2 * 2, 16)  # fewer voxels than M: all of them
    assert feats["enc0"].shape == (3, 12, 4) and feats["dec1"].shape == (3, 12, 8)
    # hooks are inert when not collecting
    net(x)
    assert ft.features == {}
    ft.remove()


def test_same_positions_for_every_item_and_pair_member():
    net = build_network_from_architecture(plain_arch(), 1, 3, deep_supervision=False)
    taps = find_taps(net)
    ft = FeatureTaps(net, taps, num_patches=7)
    x = torch.randn(1, 1, 16, 16, 16)
    ft.start()
    net(torch.cat([x, x, x.flip(0)]))  # identical items must give identical vectors
    feats = ft.stop()
    for name, f in feats.items():
        assert torch.equal(f[0], f[1]), name


def test_pretrain_model_state_dict_names_match_segmentation_network():
    torch.manual_seed(0)
    unet = build_network_from_architecture(plain_arch(), 1, 3, deep_supervision=False)
    model = LongRepPretrainModel(unet, 1, 3, proj_width=32, pred_width=8, num_patches=16)
    seg = build_network_from_architecture(plain_arch(), 1, 3, deep_supervision=True)
    keys = set(model.state_dict())
    body = {k for k in keys if not k.startswith(HEAD_PREFIXES)}
    assert body == set(seg.state_dict())
    assert any(k.startswith("longrep_heads.dec0.projector") for k in keys)
    assert not any(k.startswith("longrep_heads.enc1_last.predictor") for k in keys)  # L_O only: no predictor
    x = torch.randn(2, 1, 16, 16, 16)
    out = model(x, x + 0.1, x, x)
    assert set(out) == {"loss", "sim", "rec", "var", "cov", "orth"}
    assert torch.isfinite(out["loss"]) and -1.0 <= float(out["sim"]) <= 1.0 and 0.0 <= float(out["orth"]) <= 1.0
    out["loss"].backward()
    assert unet.encoder.stages[0][0].convs[0].conv.weight.grad is not None
    assert model.longrep_heads["dec0"].predictor[0].weight.grad is not None
