"""STAMP correctness properties on the spec's tiny configuration (CPU, < 1 s each)."""
from __future__ import annotations

import math

import pytest
import torch

from longnet.errors import LongnetError
from longnet_stamp.config import PRESETS, STAMPConfig, derive_vit_patch, input_size
from longnet_stamp.losses import (balanced_kl_terms, categorical_kl, kl_loss, masked_mse, stamp_loss,
                                  straight_through_sample)
from longnet_stamp.model import STAMPNet
from longnet_stamp.patching import patchify, random_masking, unpatchify
from longnet_stamp.probe_net import AttentionPoolProbe, STAMPProbeNet
from longnet_stamp.timeembed import DtBinning, DtEmbedding, timestep_sinusoid


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def tiny_config(**kw) -> STAMPConfig:
    """The tiny variant: 16×32×32, patch 8³ (32 tokens), width 48/depth 2/4 heads, decoder 24/1/4,
    latent 4×4, 4 Δt bins."""
    return STAMPConfig(in_channels=1, img_size=(16, 32, 32), patch=(8, 8, 8), dt_min=90, dt_max=540,
                       **{**PRESETS["tiny"], **kw})


def test_tiny_config_matches_spec():
    cfg = tiny_config()
    assert cfg.num_patches == 32 and cfg.grid == (2, 4, 4) and cfg.patch_dim == 512
    assert (cfg.width, cfg.depth, cfg.heads, cfg.dec_width, cfg.dec_depth, cfg.dec_heads) == (48, 2, 4, 24, 1, 4)
    assert (cfg.latent_vars, cfg.latent_classes, cfg.dt_bins) == (4, 4, 4)
    with pytest.raises(LongnetError, match="divisible by 6"):
        tiny_config(width=40, heads=4)
    assert derive_vit_patch([128, 128, 128]) == (16, 16, 16) and derive_vit_patch([32, 40, 32]) == (8, 8, 8)
    assert input_size([32, 44, 32], (8, 8, 8)) == (32, 40, 32)
    assert STAMPConfig.from_dict(cfg.to_dict()) == cfg


def test_patchify_unpatchify_roundtrip_and_order():
    x = torch.randn(2, 3, 16, 32, 24)
    tokens = patchify(x, (8, 8, 8))
    assert tokens.shape == (2, 2 * 4 * 3, 8 * 8 * 8 * 3)
    assert torch.equal(unpatchify(tokens, (8, 8, 8), (2, 4, 3), 3), x)
    assert torch.equal(patchify(unpatchify(tokens, (8, 8, 8), (2, 4, 3), 3), (8, 8, 8)), tokens)
    # row-major grid tokens; voxels flattened as (p1, p2, p3, C)
    assert torch.equal(tokens[0, 1], x[0, :, 0:8, 0:8, 8:16].permute(1, 2, 3, 0).reshape(-1))
    assert torch.equal(tokens[0, 3], x[0, :, 0:8, 8:16, 0:8].permute(1, 2, 3, 0).reshape(-1))


def test_number_of_visible_patches_is_floor_quarter():
    for length in (32, 80, 33, 7):
        cfg_visible = max(1, int(length * 0.25))
        assert cfg_visible == max(1, math.floor(0.25 * length))
        tokens = torch.randn(3, length, 6)
        vis, mask, ids_restore = random_masking(tokens, cfg_visible, torch.rand(3, length))
        assert vis.shape == (3, cfg_visible, 6)
        assert torch.all(mask.sum(1) == length - cfg_visible)
        # the kept tokens are exactly the unmasked ones
        for b in range(3):
            kept = tokens[b][mask[b] == 0]
            assert torch.equal(torch.sort(kept, 0).values, torch.sort(vis[b], 0).values)
    cfg = tiny_config()
    assert cfg.num_visible == 8
    out = STAMPNet(cfg)(torch.randn(2, 1, 16, 32, 32), torch.randn(2, 1, 16, 32, 32), torch.tensor([90., 400.]))
    assert torch.all(out["mask"].sum(1) == 32 - 8) and out["pred"].shape == (2, 32, 512)


def test_reconstruction_loss_ignores_visible_patches():
    pred, target = torch.randn(2, 32, 10), torch.randn(2, 32, 10)
    mask = (torch.rand(2, 32) < 0.75).float()
    base = masked_mse(pred, target, mask)
    changed = pred.clone()
    changed[mask == 0] += 100.0  # only visible-patch predictions change
    assert torch.allclose(masked_mse(changed, target, mask), base)
    hidden = pred.clone()
    hidden[mask == 1] += 1.0
    assert not torch.allclose(masked_mse(hidden, target, mask), base)
    expected = ((pred - target) ** 2).mean(-1)[mask == 1].mean()
    assert torch.allclose(base, expected)


def test_kl_nonnegative_and_free_bits_floor():
    for _ in range(5):
        q, p = torch.randn(4, 4, 4) * 3, torch.randn(4, 4, 4) * 3
        assert torch.all(categorical_kl(q, p) >= 0)
        assert float(kl_loss(q, p)[1]) >= 0
    q = torch.randn(4, 4, 4)
    assert torch.allclose(categorical_kl(q, q.clone()), torch.zeros(4), atol=1e-6)
    floored, raw = kl_loss(q, q.clone(), beta=0.2, free_bits=0.1)
    assert float(raw) == pytest.approx(0.0, abs=1e-6) and float(floored) == pytest.approx(0.1)
    losses = stamp_loss(torch.zeros(2, 32, 8), torch.zeros(2, 32, 8), torch.ones(2, 32), q, q.clone())
    assert float(losses["loss"]) == pytest.approx(0.01 * 0.1)


def test_balanced_kl_gradient_routing():
    q = torch.randn(3, 4, 4, requires_grad=True)
    p = torch.randn(3, 4, 4, requires_grad=True)
    post_term, prior_term = balanced_kl_terms(q, p, beta=0.2)
    g_post_q, g_post_p = torch.autograd.grad(post_term, [q, p], allow_unused=True, retain_graph=True)
    g_prior_q, g_prior_p = torch.autograd.grad(prior_term, [q, p], allow_unused=True)
    assert g_post_p is None or torch.all(g_post_p == 0)  # ∂(β-term)/∂prior = 0
    assert g_prior_q is None or torch.all(g_prior_q == 0)  # ∂((1−β)-term)/∂posterior = 0
    assert g_post_q.abs().sum() > 0 and g_prior_p.abs().sum() > 0
    # both terms have the value of (their weight ×) the same KL
    kl = categorical_kl(q, p).mean()
    assert torch.allclose(post_term, 0.2 * kl) and torch.allclose(prior_term, 0.8 * kl)


def test_straight_through_sample_is_exactly_one_hot_with_gradient():
    logits = torch.randn(5, 4, 4, requires_grad=True)
    z = straight_through_sample(logits)
    assert torch.all((z == 0) | (z == 1)) and torch.all(z.sum(-1) == 1)
    (z * torch.randn_like(z)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_dt_binning_and_sinusoid():
    b = DtBinning(90, 540, 16)
    dts = torch.tensor([0.0, 90.0, 120.0, 315.0, 540.0, 9999.0])
    assert b(dts).tolist() == [0, 0, 1, 8, 15, 15]  # u = (Δt−90)/450 → nearest of 16 bins, clipped
    assert torch.allclose(b.normalise(torch.tensor([180.0, 360.0])), torch.tensor([0.2, 0.6]))
    t = torch.tensor([3.0])
    emb = timestep_sinusoid(t, 8, 160.0)
    freqs = [math.exp(-math.log(160.0) * k / 4) for k in range(4)]
    expected = [math.cos(3 * f) for f in freqs] + [math.sin(3 * f) for f in freqs]
    assert torch.allclose(emb[0], torch.tensor(expected), atol=1e-6)
    assert DtEmbedding(24)(torch.tensor([0, 3])).shape == (2, 24)


def test_dt_changes_only_the_past_cls_input():
    net = STAMPNet(tiny_config()).eval()
    past, future = torch.randn(2, 1, 16, 32, 32), torch.randn(2, 1, 16, 32, 32)
    noise = torch.rand(2, 32)
    seen: list[list[torch.Tensor]] = []
    original = net.encoder.embed

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen[-1].append(out[0].detach().clone())
        return out

    net.encoder.embed = recording
    for dt in (100.0, 500.0):  # different bins
        seen.append([])
        with torch.no_grad():
            net(past, future, torch.tensor([dt, dt]), noise)
    (past_a, fut_a), (past_b, fut_b) = seen
    assert not torch.allclose(past_a[:, 0], past_b[:, 0])  # the past CLS input moves with Δt
    assert torch.equal(past_a[:, 1:], past_b[:, 1:])  # patch tokens do not
    assert torch.equal(fut_a, fut_b)  # the future scan never sees Δt


def test_prior_path_needs_no_future_image():
    net = STAMPNet(tiny_config()).eval()
    net.posterior = None  # would fail if the inference path touched the posterior
    x = torch.randn(3, 1, 16, 32, 32)
    seqs = net.probe_tokens(x, torch.full((3,), 365.0), num_samples=2)
    assert len(seqs) == 2 and seqs[0].shape == (3, 1 + 1 + 32, 24)
    probe = STAMPProbeNet(net)
    assert probe.predict_proba(x, torch.full((3,), 365.0), 3).shape == (3,)
    assert all(not p.requires_grad for p in probe.stamp.parameters())
    assert all(p.requires_grad for p in probe.probe.parameters())


def test_deterministic_variant_has_no_latent():
    net = STAMPNet(tiny_config(deterministic=True))
    assert not any(n.startswith(("posterior", "prior", "z_proj")) for n, _ in net.named_parameters())
    out = net(torch.randn(2, 1, 16, 32, 32), torch.randn(2, 1, 16, 32, 32), torch.tensor([100.0, 200.0]))
    assert "post_logits" not in out
    loss = stamp_loss(out["pred"], patchify(torch.randn(2, 1, 16, 32, 32), (8, 8, 8)), out["mask"], None, None)
    assert set(loss) == {"loss", "rec"} and torch.equal(loss["loss"], loss["rec"])
    assert net.probe_tokens(torch.randn(1, 1, 16, 32, 32), torch.tensor([100.0]))[0].shape == (1, 33, 48)


def test_one_training_step_is_finite_and_reaches_every_parameter():
    net = STAMPNet(tiny_config())
    out = net(torch.randn(2, 1, 16, 32, 32), torch.randn(2, 1, 16, 32, 32), torch.tensor([100.0, 500.0]))
    loss = stamp_loss(out["pred"], patchify(torch.randn(2, 1, 16, 32, 32), (8, 8, 8)), out["mask"],
                      out["post_logits"], out["prior_logits"])
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"])
    for name in ("encoder.cls_token", "dt_embed.mlp.0.weight", "posterior.0.weight", "prior.0.weight",
                 "z_proj.weight", "dec_dt_embed.mlp.0.weight", "mask_token", "head.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # DDP (find_unused_parameters=False) needs every trainable parameter in the graph
    unused = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused


def test_attention_pool_probe_shapes():
    probe = AttentionPoolProbe(24, 4)
    assert probe(torch.randn(5, 34, 24)).shape == (5,)
    assert probe.k.bias is None and probe.v.bias is None


def test_probe_on_encoder_tokens_and_frozen_encoder_stays_in_eval():
    net = STAMPNet(tiny_config())
    probe = STAMPProbeNet(net, use_latent=False).train()
    assert not probe.stamp.training and probe.probe.training
    assert probe.probe.k.in_features == 48  # encoder width, not the decoder's
    assert probe(torch.randn(2, 1, 16, 32, 32), torch.tensor([200.0, 300.0])).shape == (2,)


def test_best_threshold_maximises_balanced_accuracy():
    import numpy as np

    from longnet_stamp.probe import best_threshold

    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.3, 0.9])
    t = best_threshold(y, p)
    pred = (p >= t).astype(int)
    assert 0.5 * ((pred[y == 1] == 1).mean() + (pred[y == 0] == 0).mean()) == pytest.approx(5 / 6)
    assert best_threshold(np.array([1, 1]), np.array([0.2, 0.7])) == 0.5
