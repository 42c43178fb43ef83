"""`STAMPTrainer`: self-supervised pretraining of the Δt-conditioned stochastic Siamese MAE.

`-tr STAMPTrainer --deterministic-mae` trains the deterministic Siamese-MAE ablation (no latent, no KL).
The checkpoint's `extra["stamp_config"]` holds the network configuration (sizes, Δt window, bins) that
`STAMPProbeTrainer --encoder` rebuilds.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LambdaLR

from longnet.api import (IntraSubjectPairSampler, LongnetError, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT,
    Requirements, Trainer, frozen_draws, frozen_draws_path, option, save_json)
from longnet_stamp.common import WindowOptions, cache_bytes, param_groups, resolve_window, split_index, warmup_cosine_lr
from longnet_stamp.config import ArchitectureOptions, STAMPConfig, config_from_options
from longnet_stamp.data import PairBatcher
from longnet_stamp.losses import stamp_loss
from longnet_stamp.model import STAMPNet
from longnet_stamp.patching import patchify

VAL_DRAWS = 64
VAL_DRAW_SEED = 0  # one fixed set of validation pairs for every model compared on a split


@dataclass(frozen=True)
class STAMPOptions(ArchitectureOptions, WindowOptions):
    """STAMPTrainer's options."""

    batch_size: int | None = option(None, "pairs per step (None: the plan's batch size; the paper used 48)",
                                    range=POSITIVE_INT)
    lr: float = option(3e-4, "peak AdamW learning rate", range=POSITIVE_FLOAT)
    warmup_epochs: int | None = option(None, "linear warm-up epochs (None: epochs/40, at most 20)",
                                       range=NON_NEGATIVE_INT)
    norm_pix_loss: bool = option(False, "reconstruct per-patch normalised targets (off, as the paper)")
    val_iters: int | None = option(None, "validation batches per epoch (None: 10)", range=NON_NEGATIVE_INT)


class STAMPTrainer(Trainer):
    """Pairs (x_t, x_t+Δt) of one subject; past fully visible with Δt on its CLS, future 75% masked."""

    requirements = Requirements(min_visits_per_subject=2, labels="any")
    options_class = STAMPOptions
    prediction_task = "embedding"
    lr_scheduler_interval = "step"
    num_epochs = 800
    num_iterations_per_epoch = 250
    num_val_iterations_per_epoch = 10
    grad_clip_norm = 3.0
    betas = (0.9, 0.95)
    weight_decay = 0.01
    kl_beta = 0.2
    free_bits = 0.1
    kl_scale = 0.01

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamp_config: STAMPConfig | None = None
        self.window: tuple[float, float] | None = None
        self._train_index = None

    # ------------------------------------------------------------------ network / optimiser
    @property
    def batch_size(self) -> int:
        """Pairs per step on this process: the global batch split over DDP ranks, as the core does."""
        from longnet.api import split_batch

        total = self.opts.batch_size or self.configuration_manager.batch_size
        return split_batch(total, self.dist.world_size, self.dist.rank)[0]

    def build_config(self) -> STAMPConfig:
        self._train_index = split_index(self, self.train_cases)
        self.window = resolve_window(self.opts, self._train_index)
        return config_from_options(self.opts, self.num_input_channels, self.configuration_manager.patch_size,
                                   *self.window)

    def build_network(self) -> nn.Module:
        self.stamp_config = self.build_config()
        cfg = self.stamp_config
        self.print(f"STAMP{' (deterministic Siamese-MAE)' if cfg.deterministic else ''}: input "
                   f"{list(cfg.img_size)}, ViT patch {list(cfg.patch)} -> {cfg.num_patches} tokens "
                   f"({cfg.num_visible} visible in the future scan), width {cfg.width}, depth {cfg.depth}, "
                   f"latent {cfg.latent_vars}x{cfg.latent_classes}, Δt window {self.window[0]:g}-"
                   f"{self.window[1]:g} days in {cfg.dt_bins} bins")
        return STAMPNet(cfg)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(param_groups(self.network, self.weight_decay), lr=self.lr, betas=self.betas)
        warm = self.opts.warmup_epochs
        warm = min(20, self.num_epochs // 40) if warm is None else int(warm)
        iters = self.num_iterations_per_epoch
        # per optimiser step (lr_scheduler_interval): warm-up over iterations, then cosine
        return opt, LambdaLR(opt, lambda step: warmup_cosine_lr(step, 1.0, warm * iters, self.num_epochs * iters))

    @property
    def lr(self) -> float:
        return self.opts.lr

    # ------------------------------------------------------------------ data
    def _sampler(self, index) -> IntraSubjectPairSampler:
        lo, hi = self.window
        return IntraSubjectPairSampler(index, mode="window", min_days=lo, max_days=hi)

    def train_loader(self):
        cfg = self.stamp_config
        sampler = self._sampler(self._train_index)
        self.print(f"{len(sampler.subjects)} training subjects with a pair inside the Δt window")
        batcher = PairBatcher(self._train_index, sampler, self.batch_size, cfg.img_size, cfg.num_patches, True,
                              cache_bytes=cache_bytes())
        return self.make_batch_iterator(batcher.make_batch, "train")

    def val_draws(self):
        """The frozen validation pairs of this fold (None if the validation split has no pair in the window)."""
        if not self.val_cases or self.num_val_iterations_per_epoch <= 0:
            return None, None
        index = split_index(self, self.val_cases)
        try:
            sampler = self._sampler(index)
        except LongnetError as e:
            self.print(f"no validation pairs ({e}); per-epoch validation disabled")
            return None, None
        lo, hi = self.window
        path = frozen_draws_path(self.preprocessed_dataset_folder, f"STAMP_dt{lo:g}-{hi:g}", self.fold)
        return index, frozen_draws(sampler, VAL_DRAWS, VAL_DRAW_SEED, path)

    def val_loader(self):
        index, draws = self.val_draws()
        if draws is None:
            return None
        cfg = self.stamp_config
        batcher = PairBatcher(index, None, self.batch_size, cfg.img_size, cfg.num_patches, False, frozen=draws,
                              cache_bytes=cache_bytes())
        return self.make_batch_iterator(batcher.make_batch, "val")

    # ------------------------------------------------------------------ steps
    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.network(batch["past"], batch["future"], batch["dt"], batch["noise"])
        target = patchify(batch["future"], self.stamp_config.patch)
        return stamp_loss(out["pred"], target, out["mask"], out.get("post_logits"), out.get("prior_logits"),
                          self.kl_beta, self.free_bits, self.kl_scale, self.opts.norm_pix_loss)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return self._losses(batch)

    def validation_step(self, batch: dict) -> dict:
        return {k: float(v.detach().float()) for k, v in self._losses(batch).items()}

    # ------------------------------------------------------------------ checkpoints / end
    def checkpoint_extra(self) -> dict:
        cfg = self.stamp_config
        return {"stamp_config": cfg.to_dict() if cfg else None,
                "variant": "siamese_mae" if cfg and cfg.deterministic else "stamp"}

    def final_validation(self) -> None:
        """Mean losses over every frozen validation pair → validation/summary.json."""
        index, draws = self.val_draws()
        summary: dict = {"trainer": self.trainer_name, "stamp_config": self.stamp_config.to_dict()}
        if draws:
            cfg = self.stamp_config
            batcher = PairBatcher(index, None, self.batch_size, cfg.img_size, cfg.num_patches, False)
            rng = np.random.default_rng(VAL_DRAW_SEED)
            losses = []
            self.network.eval()
            with torch.no_grad():
                for i in range(0, len(draws), self.batch_size):
                    batch = self.prepare_batch(batcher.batch_from_draws(draws[i:i + self.batch_size], rng))
                    losses.append({k: float(v) for k, v in self._losses(batch).items()})
            summary["num_pairs"] = len(draws)
            summary["mean"] = {k: float(np.mean([l[k] for l in losses])) for k in losses[0]}
        save_json(summary, self.output_folder / "validation" / "summary.json")

    # ------------------------------------------------------------------ prediction (embeddings)
    @classmethod
    def add_prediction_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from longnet_stamp.predict import add_embedding_arguments

        add_embedding_arguments(parser)

    @classmethod
    def run_prediction(cls, model_folder, folds, input_folder, output_folder, args, device) -> None:
        """CLS embeddings of every input scan → embeddings.npz (+ a trajectory plot with --patients)."""
        from longnet_stamp.predict import predict_embeddings

        predict_embeddings(model_folder, folds, input_folder, output_folder, args, device)
