"""`TFMTrainer`: Temporal Flow Matching (Disch et al. 2025) as a longnet trainer plugin.

Learns a velocity field that carries the sparsity-filled context x̃ (T slots folded into channels) to the
target visit y: x_t = t·y + (1 − t)·x̃ + σε, loss MSE(v_θ(t, x_t), y − x̃). AdamW (lr 1e-4, wd 0.01), linear
warm-up over 10% of the epochs then cosine (per epoch), gradient clipping; the checkpoint with the lowest
forecast MSE on FROZEN validation draws is kept as checkpoint_best.pth. Visits of a subject must share one
grid: preprocess with intra-subject alignment (`longnet_plan_and_preprocess ... --align rigid`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet.api import (LongitudinalIndex, LongnetError, Requirements, SequenceSampler, Trainer,
    WarmupCosineScheduler, frozen_draws, frozen_draws_path, split_batch)
from longnet_tfm.data import SequenceBatchBuilder
from longnet_tfm.flow import broadcast_target, exact_ot_permutation, fold_slots, interpolate
from longnet_tfm.inference import forecast
from longnet_tfm.ode import METHODS
from longnet_tfm.unet import TFMNetConfig, TFMUNet

DEFAULTS = {"n_context": 3, "mask_prob": 0.5, "gap": 0, "sigma": 0.05, "lr": 1e-4, "weight_decay": 0.01,
            "warmup_fraction": 0.1, "batch_size": 4, "base_channels": 32, "channel_mult": "1,1,2,4",
            "attention_levels": "3", "downsample": "hw", "ode_method": "euler", "ode_steps": 10,
            "reduction": "mean", "val_draw_seed": 0}


def _ints(text: str | None) -> tuple[int, ...]:
    if text is None or str(text).strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise LongnetError(f"expected comma-separated integers, got {text!r}") from None


class _TrainBatches:
    """Picklable `make_batch(rng)` for the background loader: B sequence draws → one batch."""

    def __init__(self, sampler: SequenceSampler, builder: SequenceBatchBuilder, batch_size: int):
        self.sampler, self.builder, self.batch_size = sampler, builder, batch_size

    def __call__(self, rng: np.random.Generator) -> dict:
        draws = [self.sampler.draw(rng) for _ in range(self.batch_size)]
        return self.builder.batch(draws, rng)


class TFMTrainer(Trainer):
    """Temporal Flow Matching: forecast a subject's next scan from its earlier (sparse) scans."""

    requirements = Requirements(min_visits_per_subject=2, labels="any", aligned_visits=True)
    prediction_task = "forecast"
    best_metric = "val_mse"
    best_metric_mode = "min"
    ema_decay = 0.0          # frozen validation draws: select on the raw validation MSE, no smoothing
    grad_clip_norm = 1.0     # the paper clips gradients (value not recoverable); 1.0 as common for FM/diffusion
    num_val_iterations_per_epoch = 4

    # ------------------------------------------------------------------ options
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        a = parser.add_argument
        a("--n-context", dest="n_context", type=int, default=DEFAULTS["n_context"],
          help="context slots T (default 3)")
        a("--mask-prob", dest="mask_prob", type=float, default=DEFAULTS["mask_prob"],
          help="probability of hiding each context visit during training (default 0.5; ≥1 kept)")
        a("--gap", type=int, default=DEFAULTS["gap"], help="slots right before the target always hidden (default 0)")
        a("--sigma", type=float, default=DEFAULTS["sigma"], help="noise σ of the probability path (default 0.05)")
        a("--lr", type=float, default=DEFAULTS["lr"], help="AdamW learning rate (default 1e-4)")
        a("--weight-decay", dest="weight_decay", type=float, default=DEFAULTS["weight_decay"],
          help="AdamW weight decay (default 0.01)")
        a("--warmup-fraction", dest="warmup_fraction", type=float, default=DEFAULTS["warmup_fraction"],
          help="linear warm-up over this fraction of the epochs, then cosine (default 0.1)")
        a("--batch-size", dest="batch_size", type=int, default=DEFAULTS["batch_size"], help="batch size (default 4)")
        a("--patch-size", dest="patch_size", default=None,
          help="training crop z,y,x (default: the plans' patch size; 'full' = whole volumes)")
        a("--base-channels", dest="base_channels", type=int, default=DEFAULTS["base_channels"],
          help="U-Net base width (default 32)")
        a("--channel-mult", dest="channel_mult", default=DEFAULTS["channel_mult"],
          help="width multipliers per level (default 1,1,2,4)")
        a("--attention-levels", dest="attention_levels", default=DEFAULTS["attention_levels"],
          help="levels with self-attention, 'none' for none (default: 3 = the deepest of 4)")
        a("--no-mid-attention", dest="no_mid_attention", action="store_true",
          help="no self-attention in the middle block")
        a("--downsample", choices=("hw", "all"), default=DEFAULTS["downsample"],
          help="hw: stride (1,2,2) as the paper (default); all: stride 2 on every axis")
        a("--tiny", action="store_true", help="the spec's tiny network (base 8, mult 1,1, no attention)")
        a("--exact-ot", dest="exact_ot", action="store_true",
          help="re-pair contexts and targets by exact minibatch OT (official code; may mix subjects)")
        a("--condition-on-days", dest="condition_on_days", action="store_true",
          help="also condition on the real time gaps between context visits and the target (off by default)")
        a("--ode-method", dest="ode_method", choices=METHODS, default=DEFAULTS["ode_method"],
          help="ODE solver for validation and prediction (default euler)")
        a("--ode-steps", dest="ode_steps", type=int, default=DEFAULTS["ode_steps"],
          help="solver steps (default 10; ignored by dopri5)")
        a("--reduction", choices=("mean", "last"), default=DEFAULTS["reduction"],
          help="temporal reduction of the integrated slots (default mean)")
        a("--val-iters", dest="val_iters", type=int, default=None,
          help="validation batches per epoch (default 4); the frozen draws are val-iters x batch-size")
        a("--disable-final-validation", dest="disable_final_validation", action="store_true",
          help="skip validation/summary.json after training")

    def opt(self, key: str):
        value = self.options.get(key)
        return DEFAULTS.get(key) if value is None else value

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_context = int(self.opt("n_context"))
        self.batch_size = int(self.opt("batch_size"))
        if self.n_context < 1 or self.batch_size < 1:
            raise LongnetError("--n-context and --batch-size must be ≥ 1")
        if self.opt("exact_ot") and self.opt("condition_on_days"):
            raise LongnetError("--exact-ot re-pairs targets across the batch, so the time gaps no longer match: "
                               "use it without --condition-on-days")
        self.sigma = float(self.opt("sigma"))
        self.net_config = self.make_net_config(self.options, self.num_input_channels)
        self._val_batches: list[dict] | None = None

    @staticmethod
    def make_net_config(options: dict, num_channels: int) -> TFMNetConfig:
        """The network hyper-parameters implied by the options (also used by prediction)."""
        get = lambda k: DEFAULTS.get(k) if options.get(k) is None else options.get(k)  # noqa: E731
        t = int(get("n_context"))
        if options.get("tiny"):
            cfg = TFMNetConfig.tiny(t * num_channels, t)
        else:
            mult = _ints(get("channel_mult")) or (1,)
            att = tuple(a for a in _ints(get("attention_levels")) if a < len(mult))
            cfg = TFMNetConfig(t * num_channels, base_channels=int(get("base_channels")), channel_mult=mult,
                               attention_levels=att, mid_attention=not options.get("no_mid_attention"),
                               downsample=str(get("downsample")), n_slots=t)
        cfg.condition_on_days = bool(options.get("condition_on_days"))
        if cfg.base_channels < 2 or cfg.base_channels % 2:
            raise LongnetError(f"--base-channels must be an even number ≥ 2, got {cfg.base_channels}")
        return cfg

    # ------------------------------------------------------------------ prediction contract
    @classmethod
    def add_prediction_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from longnet_tfm.predict import add_prediction_arguments

        add_prediction_arguments(parser)

    @classmethod
    def run_prediction(cls, model, folds, input_folder: Path, output_folder: Path, args: argparse.Namespace,
                       device: torch.device) -> None:
        """Forecast every subject of `args.patients` (see longnet_tfm.predict)."""
        from longnet_tfm.predict import run_prediction

        run_prediction(model, folds, input_folder, output_folder, args, device)

    # ------------------------------------------------------------------ network and optimiser
    def build_network(self) -> nn.Module:
        return TFMUNet(self.net_config)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=float(self.opt("lr")),
                                weight_decay=float(self.opt("weight_decay")))
        warmup = int(round(float(self.opt("warmup_fraction")) * self.num_epochs))
        return opt, WarmupCosineScheduler(opt, self.num_epochs, warmup_epochs=warmup)

    # ------------------------------------------------------------------ data
    @property
    def patch_size(self) -> list[int] | None:
        text = self.options.get("patch_size")
        if text is None:
            return [int(p) for p in self.configuration_manager.patch_size]
        if str(text).lower() == "full":
            return None
        patch = list(_ints(text))
        if len(patch) != 3 or min(patch) < 1:
            raise LongnetError(f"--patch-size must be three positive integers z,y,x or 'full', got {text!r}")
        return patch

    def _index(self, cases: list[str]) -> LongitudinalIndex:
        return LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier,
                                 cases=cases)

    def _sampler(self, index: LongitudinalIndex, mask_prob: float) -> SequenceSampler:
        return SequenceSampler(index, self.n_context, mask_prob=mask_prob, gap=int(self.opt("gap")))

    def train_loader(self):
        local_bs, _ = split_batch(self.batch_size, self.dist.world_size, self.dist.rank)
        index = self._index(self.train_cases)
        make = _TrainBatches(self._sampler(index, float(self.opt("mask_prob"))),
                             SequenceBatchBuilder(index, self.patch_size), local_bs)
        return self.make_batch_iterator(make, "train")

    def frozen_validation_draws(self) -> list:
        """The validation draws of this split, made once (fixed seed) and reused by every epoch and model."""
        if not self.val_cases or self.num_val_iterations_per_epoch < 1:
            return []
        index = self._index(self.val_cases)
        try:
            sampler = self._sampler(index, float(self.opt("mask_prob")))
        except LongnetError as e:
            self.print(f"no validation sequences ({e}); per-epoch validation disabled")
            return []
        n = self.num_val_iterations_per_epoch * self.batch_size
        seed = int(self.opt("val_draw_seed"))
        key = hashlib.sha1(json.dumps([sampler.config(), n, seed], sort_keys=True).encode()).hexdigest()[:8]
        path = frozen_draws_path(self.preprocessed_dataset_folder, f"TFM_{key}", self.fold)
        return frozen_draws(sampler, n, seed, path)

    def val_loader(self):
        draws = self.frozen_validation_draws()
        if not draws:
            self.num_val_iterations_per_epoch = 0
            return None
        local_bs, offset = split_batch(self.batch_size, self.dist.world_size, self.dist.rank)
        builder = SequenceBatchBuilder(self._index(self.val_cases), self.patch_size)
        b = self.batch_size
        batches = [builder.batch(draws[i * b + offset:i * b + offset + local_bs], None)
                   for i in range(self.num_val_iterations_per_epoch)]
        self._val_batches = batches
        return _cycle(batches)

    # ------------------------------------------------------------------ steps
    def _gaps(self, batch: dict) -> torch.Tensor | None:
        return batch["gaps"] if self.net_config.condition_on_days else None

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        ctx, y = batch["context"], batch["target"]
        n_slots = ctx.shape[1]
        x0, x1 = fold_slots(ctx), fold_slots(broadcast_target(y, n_slots))
        if self.opt("exact_ot"):
            x1 = x1[exact_ot_permutation(x0, x1)]
        t = torch.rand(x0.shape[0], device=x0.device)
        xt, ut = interpolate(x0, x1, t, self.sigma)
        v = self.network(xt, t, self._gaps(batch))
        return {"loss": F.mse_loss(v.float(), ut.float())}

    def forecast(self, batch: dict, network: nn.Module | None = None) -> torch.Tensor:
        """Integrated, reduced forecast B×C×… of a batch with the configured solver."""
        return forecast(network or self.network, batch["context"], self._gaps(batch), str(self.opt("ode_method")),
                        int(self.opt("ode_steps")), str(self.opt("reduction")))

    def validation_step(self, batch: dict) -> dict:
        pred = self.forecast(batch).float()
        y = batch["target"].float()
        dims = tuple(range(1, y.ndim))
        mse = ((pred - y) ** 2).mean(dims)
        lci = ((batch["lci"].float() - y) ** 2).mean(dims)
        return {"mse": float(mse.mean()), "lci_mse": float(lci.mean())}

    # ------------------------------------------------------------------ checkpoints and final validation
    def checkpoint_extra(self) -> dict:
        return {"net_config": self.net_config.to_dict(),
                "inference": {k: self.opt(k) for k in ("n_context", "ode_method", "ode_steps", "reduction")}}

    def final_validation(self) -> None:
        """NRMSE/PSNR/SSIM of TFM and LCI on the frozen validation draws → validation/summary.json."""
        from longnet_tfm.validation import write_validation_summary

        if self._val_batches is None:
            self.val_loader()
        if self._val_batches:
            write_validation_summary(self, self._val_batches, self.output_folder / "validation" / "summary.json")


def _cycle(batches: list[dict]) -> Iterator[dict]:
    """The same validation batches, in the same order, every epoch (the loop takes exactly len(batches))."""
    while True:
        yield from batches


def network_from_checkpoint(ckpt: dict, dataset_json: dict) -> TFMUNet:
    """Rebuild the trained network (weights loaded) from a TFMTrainer checkpoint."""
    extra = ckpt.get("extra") or {}
    if extra.get("net_config"):
        cfg = TFMNetConfig.from_dict(extra["net_config"])
    else:
        options = (ckpt.get("init_args") or {}).get("options") or {}
        cfg = TFMTrainer.make_net_config(options, len(dataset_json.get("channel_names") or {"0": ""}))
    net = TFMUNet(cfg)
    from longnet.api import strip_prefixes

    net.load_state_dict(strip_prefixes(ckpt["network_weights"]))
    return net

