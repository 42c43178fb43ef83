"""`TFMTrainer`: Temporal Flow Matching (Disch et al. 2025) as a longnet trainer plugin.

Learns a velocity field that carries the sparsity-filled context x̃ (T slots folded into channels) to the
target visit y: x_t = t·y + (1 − t)·x̃ + σε, loss MSE(v_θ(t, x_t), y − x̃). By default the network also sees x̃
and adds a linear forecast from it, whose 3×3×3 filter is fitted by least squares before the first step
(`--no-context-residual`: the paper's network alone). AdamW (lr 1e-4, wd 0.01), linear warm-up over 10% of the
epochs then cosine (per epoch), gradient clipping; the checkpoint with the lowest forecast MSE on FROZEN
validation draws is kept as checkpoint_best.pth. Visits of a subject must share one grid: preprocess with
intra-subject alignment (`longnet_plan_and_preprocess ... --align rigid`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet.api import (NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, LongitudinalIndex,
    LongnetError, OptionRange, Requirements, SequenceSampler, Trainer, WarmupCosineScheduler, frozen_draws,
    frozen_draws_path, option, parse_options, split_batch)
from longnet_tfm.data import SequenceBatchBuilder
from longnet_tfm.flow import broadcast_target, exact_ot_permutation, fold_slots, interpolate
from longnet_tfm.inference import forecast
from longnet_tfm.ode import METHODS
from longnet_tfm.unet import TFMNetConfig, TFMUNet

@dataclass(frozen=True)
class TFMOptions:
    """TFMTrainer's options: each default is held here once; `longnet_train -tr TFMTrainer -h` shows them."""

    n_context: int = option(3, "context slots T", range=POSITIVE_INT)
    mask_prob: float = option(0.5, "probability of hiding each context visit during training (at least one kept)",
                              range=OptionRange(float, 0, maximum=1))
    gap: int = option(0, "slots right before the target always hidden", range=NON_NEGATIVE_INT)
    sigma: float = option(0.05, "noise σ of the probability path", range=NON_NEGATIVE_FLOAT)
    lr: float = option(1e-4, "AdamW learning rate", range=POSITIVE_FLOAT)
    weight_decay: float = option(0.01, "AdamW weight decay", range=NON_NEGATIVE_FLOAT)
    warmup_fraction: float = option(0.1, "linear warm-up over this fraction of the epochs, then cosine",
                                    range=OptionRange(float, 0, maximum=1))
    batch_size: int = option(4, "batch size", range=POSITIVE_INT)
    patch_size: str | None = option(None, "training crop z,y,x (None: the plans' patch size; 'full' = whole "
                                          "volumes)")
    base_channels: int = option(32, "U-Net base width (an even number)", range=OptionRange(int, 2))
    channel_mult: str = option("1,1,2,4", "width multipliers per level")
    attention_levels: str = option("3", "levels with self-attention, 'none' for none (3 = the deepest of 4)")
    no_mid_attention: bool = option(False, "no self-attention in the middle block")
    downsample: str = option("hw", "hw: stride (1,2,2) as the paper; all: stride 2 on every axis",
                             choices=("hw", "all"))
    tiny: bool = option(False, "the tiny test network (base 8, mult 1,1, no attention)")
    exact_ot: bool = option(False, "re-pair contexts and targets by exact minibatch OT (official code; may mix "
                                   "subjects)")
    condition_on_days: bool = option(False, "also condition on the real time gaps between context visits and "
                                            "the target")
    no_context_residual: bool = option(False, "the paper's velocity network alone: without the filled context as "
                                              "input and the linear forecast from it (a 3x3x3 filter fitted by "
                                              "least squares, slot weights)")
    ode_method: str = option("euler", "ODE solver for validation and prediction", choices=METHODS)
    ode_steps: int = option(2, "solver steps (ignored by dopri5)", range=POSITIVE_INT)
    reduction: str = option("mean", "temporal reduction of the integrated slots", choices=("mean", "last"))
    val_iters: int | None = option(None, "validation batches per epoch (None: 4); the frozen draws are "
                                         "val-iters x batch-size", range=NON_NEGATIVE_INT)
    disable_final_validation: bool = option(False, "skip validation/summary.json after training")
    val_draw_seed: int = 0  # not a flag: the seed of the frozen validation draws


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

    options_class = TFMOptions
    requirements = Requirements(min_visits_per_subject=2, labels="any", aligned_visits=True)
    prediction_task = "forecast"
    best_metric = "val_mse"
    best_metric_mode = "min"
    ema_decay = 0.0          # frozen validation draws: select on the raw validation MSE, no smoothing
    grad_clip_norm = 1.0     # the paper clips gradients (value not recoverable); 1.0 as common for FM/diffusion
    num_val_iterations_per_epoch = 4

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_context = self.opts.n_context
        self.batch_size = self.opts.batch_size
        if self.opts.exact_ot and self.opts.condition_on_days:
            raise LongnetError("--exact-ot re-pairs targets across the batch, so the time gaps no longer match: "
                               "use it without --condition-on-days")
        self.sigma = self.opts.sigma
        self.net_config = self.make_net_config(self.opts, self.num_input_channels)
        self._val_batches: list[dict] | None = None

    @staticmethod
    def make_net_config(opts: TFMOptions, num_channels: int) -> TFMNetConfig:
        """The network hyper-parameters implied by the options (also used by prediction)."""
        t = opts.n_context
        if opts.tiny:
            cfg = TFMNetConfig.tiny(t * num_channels, t)
        else:
            mult = _ints(opts.channel_mult) or (1,)
            att = tuple(a for a in _ints(opts.attention_levels) if a < len(mult))
            cfg = TFMNetConfig(t * num_channels, base_channels=opts.base_channels, channel_mult=mult,
                               attention_levels=att, mid_attention=not opts.no_mid_attention,
                               downsample=opts.downsample, n_slots=t)
        cfg.condition_on_days = opts.condition_on_days
        cfg.context_residual = not opts.no_context_residual
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
        net = TFMUNet(self.net_config)
        if self.net_config.context_residual:
            net.context_filter.requires_grad_(False)  # fitted in closed form (initialize), not by the optimiser
        return net

    #: training batches the context filter's least-squares fit sees (drawn like training batches, own seed)
    context_fit_batches = 32

    def initialize(self) -> None:
        super().initialize()
        if self.net_config.context_residual and not self.options.get("random_init"):
            self.fit_context_filter()

    def fit_context_filter(self) -> None:
        """Least-squares fit of the linear forecast from the context (see longnet_tfm.linear_head); a resumed
        run overwrites it with the checkpoint's, which holds the same fit."""
        from longnet_tfm.linear_head import fit_context_filter

        make = self._train_batches(self.batch_size)
        rng = np.random.default_rng(self.seed + 7)
        conv = self._eager_network.context_filter
        r2 = fit_context_filter(conv, (make(rng) for _ in range(self.context_fit_batches)))
        conv.to(self.device)
        self.print(f"context filter fitted by least squares on {self.context_fit_batches * self.batch_size} "
                   f"training crops: it explains {100 * r2:.1f}% of the velocity's energy")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=self.opts.lr,
                                weight_decay=self.opts.weight_decay)
        warmup = int(round(self.opts.warmup_fraction * self.num_epochs))
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
        return SequenceSampler(index, self.n_context, mask_prob=mask_prob, gap=self.opts.gap)

    def train_loader(self):
        local_bs, _ = split_batch(self.batch_size, self.dist.world_size, self.dist.rank)
        return self.make_batch_iterator(self._train_batches(local_bs), "train")

    def _train_batches(self, batch_size: int) -> _TrainBatches:
        """`make_batch(rng)` of training batches (the loader's, and the context filter's fit)."""
        index = self._index(self.train_cases)
        return _TrainBatches(self._sampler(index, self.opts.mask_prob), SequenceBatchBuilder(index, self.patch_size),
                             batch_size)

    def frozen_validation_draws(self) -> list:
        """The validation draws of this split, made once (fixed seed) and reused by every epoch and model."""
        if not self.val_cases or self.num_val_iterations_per_epoch < 1:
            return []
        index = self._index(self.val_cases)
        try:
            sampler = self._sampler(index, self.opts.mask_prob)
        except LongnetError as e:
            self.print(f"no validation sequences ({e}); per-epoch validation disabled")
            return []
        n = self.num_val_iterations_per_epoch * self.batch_size
        seed = self.opts.val_draw_seed
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
        if self.opts.exact_ot:
            x1 = x1[exact_ot_permutation(x0, x1)]
        t = torch.rand(x0.shape[0], device=x0.device)
        xt, ut = interpolate(x0, x1, t, self.sigma)
        v = self.network(xt, t, self._gaps(batch), x0 if self.net_config.context_residual else None)
        return {"loss": F.mse_loss(v.float(), ut.float())}

    def forecast(self, batch: dict, network: nn.Module | None = None) -> torch.Tensor:
        """Integrated, reduced forecast B×C×… of a batch with the configured solver."""
        return forecast(network or self.network, batch["context"], self._gaps(batch), self.opts.ode_method,
                        self.opts.ode_steps, self.opts.reduction)

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
                "inference": {k: getattr(self.opts, k) for k in ("n_context", "ode_method", "ode_steps", "reduction")}}

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
        cfg = TFMTrainer.make_net_config(parse_options(TFMOptions, options),
                                         len(dataset_json.get("channel_names") or {"0": ""}))
    net = TFMUNet(cfg)
    from longnet.api import strip_prefixes

    net.load_state_dict(strip_prefixes(ckpt["network_weights"]))
    return net

