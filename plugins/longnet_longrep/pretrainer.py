"""`LongRepPretrainer`: self-supervised pretraining of the planned U-Net on intra-subject visit pairs
(Ren et al., NeurIPS 2022).

Loss: L_PT = λ L_sim + α L_rec + μ L_S + γ L_C + β L_O on aligned visit pairs with identical geometric and
intensity augmentation. The checkpoint's network weights carry the segmentation network's parameter names,
so `longnet_train ... -tr LongRepFinetuner --pretrained-weights .../checkpoint_final.pth` (or any
segmentation trainer) starts from it. The projector/predictor/reconstruction heads are only in checkpoint_latest.pth
(to continue the pretraining with --c); checkpoint_final.pth and checkpoint_best.pth hold the U-Net alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from longnet.api import (IntraSubjectPairSampler, LongitudinalIndex, LongnetError, NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT, OptionRange, POSITIVE_FLOAT, POSITIVE_INT, Requirements, Trainer,
    build_network_from_architecture, frozen_draws, frozen_draws_path, option, split_batch, unwrap)
from longnet_longrep.model import HEAD_PREFIXES, LongRepPretrainModel, LossWeights
from longnet_longrep.pairs import FrozenPairBatches, PairAugmentation, PairBatchMaker
from longnet_longrep.schedule import ConstantThenLinearLR

VAL_DRAW_SEED = 0  # fixed, so runs with different --seed still validate on the same pairs


@dataclass(frozen=True)
class PairOptions:
    """Pair sampling options shared by pretraining and finetuning (L_cs)."""

    pair_mode: str = option("random", "intra-subject pairs: two random distinct visits (official code) or "
                                      "consecutive visits (paper)", choices=("random", "adjacent"))
    no_intensity_aug: bool = option(False, "no intensity corruption of the pairs (pretraining: plain "
                                           "reconstruction)")


@dataclass(frozen=True)
class PretrainerOptions(PairOptions):
    """LongRepPretrainer's options."""

    val_iters: int | None = option(None, "validation batches per epoch (fixed pairs from the validation split; "
                                         "None: 5)", range=NON_NEGATIVE_INT)
    proj_width: int = option(2048, "projector width W", range=POSITIVE_INT)
    pred_width: int | None = option(None, "predictor bottleneck width (None: W/4, the official code's 512 for "
                                          "W=2048)", range=POSITIVE_INT)
    num_patches: int = option(128, "voxel positions M sampled per tapped layer (same for both visits and all "
                                   "items)", range=POSITIVE_INT)
    lambda_sim: float = option(1.0, "weight λ of L_sim", range=NON_NEGATIVE_FLOAT)
    alpha_rec: float = option(10.0, "weight α of L_rec", range=NON_NEGATIVE_FLOAT)
    mu_var: float = option(1e-2, "weight μ of L_S", range=NON_NEGATIVE_FLOAT)
    gamma_cov: float = option(1e-3, "weight γ of L_C", range=NON_NEGATIVE_FLOAT)
    beta_orth: float = option(100.0, "weight β of L_O", range=NON_NEGATIVE_FLOAT)
    lr: float = option(2e-4, "U-Net learning rate (Adam)", range=POSITIVE_FLOAT)
    beta1: float = option(0.9, "Adam β1 of the U-Net (paper 0.9, code 0.5)", range=OptionRange(float, 0, maximum=1))
    head_lr: float = option(2e-4, "projector/predictor AdamW learning rate", range=POSITIVE_FLOAT)
    head_weight_decay: float = option(1e-2, "projector/predictor AdamW weight decay", range=NON_NEGATIVE_FLOAT)
    lr_decay_start: float = option(0.5, "fraction of the epochs after which the lr decays linearly to 0",
                                   range=OptionRange(float, 0, maximum=1))


class LongRepPretrainer(Trainer):
    """Patchwise spatiotemporal SimSiam on encoder+decoder taps of the planned U-Net, with L_S/L_C/L_O
    regularisers and a denoising reconstruction head. Needs subjects with >= 2 (aligned) visits; no labels."""

    requirements = Requirements(min_visits_per_subject=2, min_subjects=1, labels="any", aligned_visits=True)
    options_class = PretrainerOptions
    prediction_task = "none"  # its checkpoint initialises LongRepFinetuner
    # the SimSiam heads (W x W per tapped layer, with their AdamW moments ~95% of a full checkpoint) only matter for
    # continuing the pretraining: checkpoint_final/best hold the U-Net alone, checkpoint_latest everything
    resume_only_prefixes = HEAD_PREFIXES
    best_metric = "val_loss"
    best_metric_mode = "min"
    num_val_iterations_per_epoch = 5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pair_aug = PairAugmentation(intensity=not self.opts.no_intensity_aug)

    # ------------------------------------------------------------------ network and optimiser
    def loss_weights(self) -> LossWeights:
        o = self.opts
        return LossWeights(sim=o.lambda_sim, rec=o.alpha_rec, var=o.mu_var, cov=o.gamma_cov, orth=o.beta_orth)

    def build_network(self) -> nn.Module:
        unet = build_network_from_architecture(self.configuration_manager.architecture, self.num_input_channels,
                                               self.label_manager.num_segmentation_heads, deep_supervision=False)
        o = self.opts
        model = LongRepPretrainModel(unet, self.num_input_channels, self.label_manager.num_segmentation_heads,
                                     proj_width=o.proj_width,
                                     pred_width=o.pred_width if o.pred_width is not None else max(1, o.proj_width // 4),
                                     num_patches=o.num_patches, weights=self.loss_weights())
        self.print("LongRep taps: " + ", ".join(f"{t.name} ({t.module_name}, {t.channels} ch, 1/"
                                                 f"{'x'.join(map(str, t.downsampling))})" for t in model.taps))
        return model

    def configure_optimizers(self):
        """One AdamW with two parameter groups: the U-Net (+ reconstruction conv) without weight decay, i.e.
        Adam as in the paper, and the projector/predictor heads with their own lr and weight decay."""
        net = unwrap(self.network)
        o = self.opts
        heads = list(net.longrep_heads.parameters())
        head_ids = {id(p) for p in heads}
        rest = [p for p in net.parameters() if id(p) not in head_ids]
        groups = [{"params": rest, "lr": o.lr, "weight_decay": 0.0, "betas": (o.beta1, 0.999)},
                  {"params": heads, "lr": o.head_lr, "weight_decay": o.head_weight_decay}]
        opt = torch.optim.AdamW(groups)
        return opt, ConstantThenLinearLR(opt, self.num_epochs, o.lr_decay_start)

    # ------------------------------------------------------------------ data
    def _maker(self, cases: list[str]) -> PairBatchMaker | None:
        index = LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier, cases)
        try:
            sampler = IntraSubjectPairSampler(index, mode=self.opts.pair_mode)
        except LongnetError:
            return None
        conf = self.configuration_manager
        local_bs, _ = split_batch(conf.batch_size, self.dist.world_size, self.dist.rank)
        return PairBatchMaker(index, sampler, conf.patch_size, local_bs, self.pair_aug)

    def train_loader(self):
        maker = self._maker(self.train_cases)
        if maker is None:
            raise LongnetError("LongRepPretrainer: no training subject has two visits to pair")
        return self.make_batch_iterator(maker.make_batch, "train")

    def val_loader(self):
        if not self.val_cases or self.num_val_iterations_per_epoch <= 0:
            return None
        maker = self._maker(self.val_cases)
        if maker is None:
            self.print("no validation subject with two visits: per-epoch validation disabled")
            return None
        n = self.num_val_iterations_per_epoch * maker.batch_size
        mode = maker.sampler.mode
        path = frozen_draws_path(self.preprocessed_dataset_folder, f"longrep_{mode}_{n}", self.fold)
        draws = frozen_draws(maker.sampler, n, VAL_DRAW_SEED, path)
        return FrozenPairBatches(maker, draws, self.num_val_iterations_per_epoch, VAL_DRAW_SEED)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.network(batch["x_a"], batch["x_b"], batch["clean_a"], batch["clean_b"])

    def validation_step(self, batch: dict) -> dict:
        out = self.network(batch["x_a"], batch["x_b"], batch["clean_a"], batch["clean_b"])
        return {k: float(v.detach().float()) for k, v in out.items()}
