"""TFM (plugins/longnet_tfm): the properties the method requires, on tiny tensors and a tiny dataset.

Untrained (zero-initialised output) model returns the filled context exactly (last == LCI, mean == mean of
filled slots); sparsity filling; the σ = 0 path; Euler/RK4/dopri5 on the constant oracle field return the
target; frozen validation draws identical across epochs; optional time conditioning; exact-OT pairing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from longnet.cli.train import main as train_main
from longnet.data.longitudinal import LongitudinalIndex
from longnet.data.longitudinal_sampling import SequenceDraw, fill_sparse
from longnet_tfm.data import SequenceBatchBuilder, minmax_per_channel
from longnet_tfm.flow import (broadcast_target, exact_ot_permutation, fold_slots, interpolate, reduce_slots,
                              unfold_slots)
from longnet_tfm.inference import forecast, integrate_slots, sliding_network
from longnet_tfm.ode import integrate
from longnet_tfm.trainer import TFMTrainer
from longnet_tfm.unet import TFMNetConfig, TFMUNet
from tiny_long_dataset import DATASET, make_tiny_long_dataset
from tiny_seg_dataset import fold_dir, set_env

T, C, SHAPE = 3, 1, (8, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


def _filled_context(seed: int = 0, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch whose slot 0 is missing and filled from slot 1 (as fill_sparse does), and the LCI (slot 2)."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.rand(b, T, C, *SHAPE, generator=g)
    ctx[:, 0] = ctx[:, 1]
    return ctx, ctx[:, -1]


def test_fill_rule_and_batch_builder(tmp_path):
    a, b = np.full((1, 2), 1.0), np.full((1, 2), 2.0)
    out = fill_sparse([None, a, None, b, None])
    assert [o is a for o in out] == [True, True, True, False, False] and all(o is b for o in out[3:])
    pre = make_tiny_long_dataset(tmp_path)
    index = LongitudinalIndex(pre, "nnUNetPlans_3d_fullres")
    draw = SequenceDraw("s0", [None, "s0_v1", None, "s0_v3", None], "s0_v4", [None, 100.0, None, 300.0, None], 400.0)
    s = SequenceBatchBuilder(index, None).sample(draw, None)
    v1, v3 = (minmax_per_channel(index.load(c)[0]) for c in ("s0_v1", "s0_v3"))
    for slot, ref in zip(s["context"], [v1, v1, v1, v3, v3]):
        np.testing.assert_array_equal(slot, ref)
    np.testing.assert_array_equal(s["lci"], v3)  # LCI = last non-missing context frame
    assert s["context"].min() >= 0 and s["context"].max() <= 1 and s["target"].max() == 1
    assert s["valid"].tolist() == [False, True, False, True, False]
    assert np.isnan(s["gaps"][0]) and s["gaps"][1] == 300.0 and s["gaps"][3] == 100.0


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_untrained_model_returns_filled_context(method):
    torch.manual_seed(0)
    net = TFMUNet(TFMNetConfig.tiny(T * C, T)).eval()
    ctx, lci = _filled_context()
    x1 = integrate_slots(net, ctx, None, method, 2)
    assert torch.equal(x1, ctx)
    assert torch.equal(forecast(net, ctx, None, method, 2, "last"), lci)
    assert torch.equal(forecast(net, ctx, None, method, 2, "mean"), ctx.mean(1))
    tiled = sliding_network(net, (8, 8, 8))  # volumes larger than the patch: sliding-window velocity
    assert torch.equal(integrate_slots(tiled, ctx[:1], None, method, 2), ctx[:1])


def test_sigma_zero_path_and_target_velocity():
    ctx, _ = _filled_context()
    y = torch.rand(2, C, *SHAPE)
    x0, x1 = fold_slots(ctx), fold_slots(broadcast_target(y, T))
    xt, ut = interpolate(x0, x1, torch.ones(2), sigma=0.0)
    assert torch.equal(unfold_slots(xt, T), broadcast_target(y, T))
    assert torch.equal(unfold_slots(ut, T), y[:, None] - ctx)
    xt0, _ = interpolate(x0, x1, torch.zeros(2), sigma=0.0)
    assert torch.equal(xt0, x0)
    noisy, _ = interpolate(x0, x1, torch.full((2,), 0.5), sigma=0.05)
    assert 0.03 < float((noisy - 0.5 * (x0 + x1)).std()) < 0.07


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10])
def test_oracle_field_reaches_target_for_any_step_count(steps):
    ctx, _ = _filled_context(1)
    y = torch.rand(2, C, *SHAPE)
    x0, x1 = fold_slots(ctx), fold_slots(broadcast_target(y, T))
    oracle = lambda t, x: x1 - x0  # noqa: E731  the constant field u = y − x̃
    for method in ("euler", "rk4", "dopri5"):
        out = integrate(oracle, x0, method, steps)
        torch.testing.assert_close(out, x1, atol=2e-6, rtol=0)
        torch.testing.assert_close(reduce_slots(unfold_slots(out, T), "mean"), y, atol=2e-6, rtol=0)


def test_network_shapes_time_conditioning_and_gradients():
    cfg = TFMNetConfig(T * 2, base_channels=8, channel_mult=(1, 2), attention_levels=(1,), n_slots=T,
                       condition_on_days=True)
    net = TFMUNet(cfg)
    x = torch.rand(2, T * 2, 5, 9, 11)  # odd sizes: padded internally, cropped back
    gaps = torch.tensor([[float("nan"), 200.0, 100.0], [300.0, 200.0, 100.0]])
    out = net(x, torch.rand(2), gaps)
    assert out.shape == x.shape and torch.all(out == 0)
    out.sum().backward()
    assert net.out[-1].weight.grad is not None and net.out[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="gaps"):
        net(x, torch.rand(2))
    assert TFMNetConfig.from_dict(cfg.to_dict()) == cfg


def test_exact_ot_permutation_repairs_a_shuffled_batch():
    a = torch.stack([torch.full((4,), float(i)) for i in range(4)])
    perm = torch.tensor([2, 0, 3, 1])
    assert exact_ot_permutation(a, a[perm]).tolist() == torch.argsort(perm).tolist()
    assert exact_ot_permutation(a, a).tolist() == [0, 1, 2, 3]


def test_frozen_validation_draws_identical_across_epochs(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    pre = make_tiny_long_dataset(tmp_path)
    seen: list[list] = []
    orig = TFMTrainer.validation_step

    def record(self, batch):
        seen.append([batch["valid"].clone(), batch["context"].clone(), batch["target"].clone()])
        return orig(self, batch)

    monkeypatch.setattr(TFMTrainer, "validation_step", record)
    args = [DATASET, "3d_fullres", "0", "-tr", "TFMTrainer", "--epochs", "2", "--iters-per-epoch", "1", "--tiny",
            "--val-iters", "2", "--batch-size", "2", "--ode-steps", "2", "-device", "cpu"]
    assert train_main(args) == 0
    assert len(seen) == 4  # 2 epochs × 2 validation batches
    for a, b in zip(seen[:2], seen[2:]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    files = list((pre / "frozen_draws").glob("TFM_*_fold0.json"))
    assert len(files) == 1
    draws = json.loads(files[0].read_text())["draws"]
    assert len(draws) == 4 and all(d["subject"] in ("s0", "s3") for d in draws)
    fd = fold_dir(tmp_path, "TFMTrainer", dataset_name=DATASET)
    ckpt = torch.load(fd / "checkpoint_final.pth", weights_only=True)
    assert ckpt["extra"]["net_config"]["base_channels"] == 8 and ckpt["current_epoch"] == 2
    assert (fd / "checkpoint_best.pth").is_file()
    val = json.loads((fd / "validation" / "summary.json").read_text())
    assert {"NRMSE", "baseline_NRMSE", "PSNR", "SSIM"} <= set(val["mean"])
    # a second model on the same split reloads the SAME draws (file unchanged)
    before = files[0].read_bytes()
    seen.clear()
    monkeypatch.setenv("LONGNET_RESULTS", str(tmp_path / "results2"))
    assert train_main(args + ["--seed", "7"]) == 0
    assert files[0].read_bytes() == before


def test_context_filter_least_squares_recovers_a_linear_forecast():
    """When the target is a linear filter of the context, the fit finds it exactly (R² = 1) and the network's
    forecast (one Euler step) is that target; an unfitted network still returns the context."""
    from longnet_tfm.linear_head import fit_context_filter

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        ctx = torch.rand(2, T, C, 8, 10, 9, generator=gen)
        last = ctx[:, -1]
        smooth = torch.nn.functional.avg_pool3d(last, 3, stride=1, padding=1, count_include_pad=True)
        target = 0.6 * smooth + 0.3 * ctx[:, 0] + 0.05  # a 3x3x3 filter of the slots plus a constant
        batches.append({"context": ctx, "target": target})
    cfg = TFMNetConfig.tiny(T * C, T)
    cfg.context_residual = True
    net = TFMUNet(cfg).eval()
    assert torch.equal(forecast(net, batches[0]["context"], None, "euler", 1), batches[0]["context"].mean(1))
    r2 = fit_context_filter(net.context_filter, batches, ridge=1e-9)
    assert r2 > 0.9999
    pred = forecast(net, batches[1]["context"], None, "euler", 1, "last")
    assert torch.allclose(pred, batches[1]["target"], atol=1e-4)


@pytest.mark.parametrize("extra", [["--condition-on-days", "--ode-method", "rk4"], ["--exact-ot"],
                                   ["--no-context-residual"]])
def test_training_options_run(tmp_path, monkeypatch, extra):
    set_env(monkeypatch, tmp_path)
    make_tiny_long_dataset(tmp_path)
    args = [DATASET, "3d_fullres", "1", "-tr", "TFMTrainer", "--epochs", "1", "--iters-per-epoch", "1", "--tiny",
            "--val-iters", "1", "--batch-size", "2", "--ode-steps", "1", "--disable-final-validation",
            "-device", "cpu"] + extra
    assert train_main(args) == 0
    ckpt = torch.load(fold_dir(tmp_path, "TFMTrainer", "1", DATASET) / "checkpoint_final.pth", weights_only=True)
    assert ckpt["extra"]["net_config"]["condition_on_days"] == ("--condition-on-days" in extra)
    assert np.isfinite(ckpt["logging"]["train_loss"][0])
    fitted = "--no-context-residual" not in extra  # the context filter was fitted before the first step
    assert ckpt["extra"]["net_config"]["context_residual"] == fitted
    assert ("context_filter.weight" in ckpt["network_weights"]) == fitted
    if fitted:
        assert ckpt["network_weights"]["context_filter.weight"].abs().sum() > 0


def test_exact_ot_with_time_gaps_is_refused(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    make_tiny_long_dataset(tmp_path)
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "TFMTrainer", "--exact-ot", "--condition-on-days",
                       "-device", "cpu"]) == 1


def test_forecast_evaluation_side_by_side_and_changed_region(tmp_path, capsys):
    from raw_datasets import write_image
    from longnet.cli.evaluate import main as evaluate_main
    from longnet.evaluation.image import forecast_comparison

    rng = np.random.default_rng(0)
    ref = rng.random((12, 12, 12))
    ref[0, 0, 0], ref[0, 0, 1] = 0.0, 1.0  # range exactly [0, 1]
    lci = ref.copy()
    lci[4:8, 4:8, 4:8] += 0.3  # the region that changed: 64 voxels
    pred = ref.copy()
    pred[4:8, 4:8, 4:8] += 0.1
    m = forecast_comparison(pred, ref, lci)
    assert m["changed_fraction"] == pytest.approx(64 / 12 ** 3)
    assert m["NRMSE_changed"] == pytest.approx(0.1) and m["baseline_NRMSE_changed"] == pytest.approx(0.3)
    assert m["NRMSE"] == pytest.approx(0.1 * np.sqrt(64 / 12 ** 3)) and m["baseline_PSNR"] < m["PSNR"]
    assert m["SSIM"] > m["baseline_SSIM"]
    for name, arr in (("pred", pred), ("gt", ref), ("pred/lci", lci)):
        write_image(tmp_path / name / "s1_v2_0000.nii.gz", arr.astype(np.float32))
    mask = np.zeros_like(ref, dtype=np.uint8)
    mask[4:6, 4:8, 4:8] = 1
    write_image(tmp_path / "mask" / "s1_v2_0000.nii.gz", mask)
    assert evaluate_main([str(tmp_path / "gt"), str(tmp_path / "pred"), "--task", "forecast"]) == 0
    s = json.loads((tmp_path / "pred" / "summary.json").read_text())
    side = s["side_by_side"]
    assert side["overall"]["LCI"]["NRMSE"] == pytest.approx(m["baseline_NRMSE"], rel=1e-5)
    assert side["changed"]["prediction"]["NRMSE"] == pytest.approx(0.1, rel=1e-5)
    assert "LCI" in capsys.readouterr().out
    assert evaluate_main([str(tmp_path / "gt"), str(tmp_path / "pred"), "--task", "forecast", "--change-mask",
                          str(tmp_path / "mask")]) == 0
    s = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert s["side_by_side"]["changed"]["fraction"] == pytest.approx(32 / 12 ** 3)
