"""`LongRepPretrainer`: self-supervised pretraining of the planned U-Net on intra-subject visit pairs
(Ren et al., NeurIPS 2022).

Loss: L_PT = λ L_sim + α L_rec + μ L_S + γ L_C + β L_O on aligned visit pairs with identical geometric and
intensity augmentation. The checkpoint's network weights carry the segmentation network's parameter names,
so `longnet_train ... -tr LongRepFinetuner --pretrained-weights .../checkpoint_final.pth` (or any
segmentation trainer) starts from it. The projector/predictor/reconstruction heads are only in checkpoint_latest.pth
(to continue the pretraining with --c); checkpoint_final.pth and checkpoint_best.pth hold the U-Net alone.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from longnet.api import (IntraSubjectPairSampler, LongitudinalIndex, LongnetError, NON_NEGATIVE_FLOAT, OptionRange,
    POSITIVE_FLOAT, POSITIVE_INT, Requirements, Trainer, build_network_from_architecture, frozen_draws,
    frozen_draws_path, option_value, split_batch, unwrap)
from longnet_longrep.model import HEAD_PREFIXES, LongRepPretrainModel, LossWeights
from longnet_longrep.pairs import FrozenPairBatches, PairAugmentation, PairBatchMaker
from longnet_longrep.schedule import ConstantThenLinearLR

VAL_DRAW_SEED = 0  # fixed, so runs with different --seed still validate on the same pairs


def add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """Pair sampling options shared by pretraining and finetuning (L_cs)."""
    parser.add_argument("--pair-mode", dest="pair_mode", default="random", choices=["random", "adjacent"],
                        help="intra-subject pairs: two random distinct visits (official code, default) or "
                             "consecutive visits (paper)")
    parser.add_argument("--no-intensity-aug", dest="no_intensity_aug", action="store_true",
                        help="no intensity corruption of the pairs (pretraining: plain reconstruction)")


class LongRepPretrainer(Trainer):
    """Patchwise spatiotemporal SimSiam on encoder+decoder taps of the planned U-Net, with L_S/L_C/L_O
    regularisers and a denoising reconstruction head. Needs subjects with >= 2 (aligned) visits; no labels."""

    requirements = Requirements(min_visits_per_subject=2, min_subjects=1, labels="any", aligned_visits=True)
    option_ranges = {"proj_width": POSITIVE_INT, "pred_width": POSITIVE_INT, "num_patches": POSITIVE_INT,
                     "lr": POSITIVE_FLOAT, "head_lr": POSITIVE_FLOAT, "head_weight_decay": NON_NEGATIVE_FLOAT,
                     "lr_decay_start": OptionRange(float, 0, maximum=1),
                     **{w: NON_NEGATIVE_FLOAT for w in ("lambda_sim", "alpha_rec", "mu_var", "gamma_cov", "beta_orth")}}
    prediction_task = "none"  # its checkpoint initialises LongRepFinetuner
    # the SimSiam heads (W x W per tapped layer, with their AdamW moments ~95% of a full checkpoint) only matter for
    # continuing the pretraining: checkpoint_final/best hold the U-Net alone, checkpoint_latest everything
    resume_only_prefixes = HEAD_PREFIXES
    best_metric = "val_loss"
    best_metric_mode = "min"
    num_val_iterations_per_epoch = 5

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        a = parser.add_argument
        a("--val-iters", dest="val_iters", type=int, default=None,
          help="validation batches per epoch (fixed pairs from the validation split; default 5)")
        a("--proj-width", dest="proj_width", type=int, default=2048, help="projector width W (default 2048)")
        a("--pred-width", dest="pred_width", type=int, default=None,
          help="predictor bottleneck width (default W/4, the official code's 512 for W=2048)")
        a("--num-patches", dest="num_patches", type=int, default=128,
          help="voxel positions M sampled per tapped layer (same for both visits and all items; default 128)")
        a("--lambda-sim", dest="lambda_sim", type=float, default=1.0, help="weight λ of L_sim (default 1)")
        a("--alpha-rec", dest="alpha_rec", type=float, default=10.0, help="weight α of L_rec (default 10)")
        a("--mu-var", dest="mu_var", type=float, default=1e-2, help="weight μ of L_S (default 1e-2)")
        a("--gamma-cov", dest="gamma_cov", type=float, default=1e-3, help="weight γ of L_C (default 1e-3)")
        a("--beta-orth", dest="beta_orth", type=float, default=100.0, help="weight β of L_O (default 100)")
        a("--lr", dest="lr", type=float, default=2e-4, help="U-Net learning rate (Adam; default 2e-4)")
        a("--beta1", dest="beta1", type=float, default=0.9, help="Adam β1 of the U-Net (paper 0.9, code 0.5)")
        a("--head-lr", dest="head_lr", type=float, default=2e-4, help="projector/predictor AdamW lr (2e-4)")
        a("--head-weight-decay", dest="head_weight_decay", type=float, default=1e-2,
          help="projector/predictor AdamW weight decay (default 1e-2)")
        a("--lr-decay-start", dest="lr_decay_start", type=float, default=0.5,
          help="fraction of the epochs after which the lr decays linearly to 0 (default 0.5)")
        add_pair_arguments(parser)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pair_aug = PairAugmentation(intensity=not self.options.get("no_intensity_aug"))

    # ------------------------------------------------------------------ network and optimiser
    def loss_weights(self) -> LossWeights:
        o = self.options
        return LossWeights(sim=float(o.get("lambda_sim", 1.0)), rec=float(o.get("alpha_rec", 10.0)),
                           var=float(o.get("mu_var", 1e-2)), cov=float(o.get("gamma_cov", 1e-3)),
                           orth=float(o.get("beta_orth", 100.0)))

    def build_network(self) -> nn.Module:
        unet = build_network_from_architecture(self.configuration_manager.architecture, self.num_input_channels,
                                               self.label_manager.num_segmentation_heads, deep_supervision=False)
        width = int(option_value(self.options, "proj_width", 2048))
        model = LongRepPretrainModel(unet, self.num_input_channels, self.label_manager.num_segmentation_heads,
                                     proj_width=width,
                                     pred_width=int(option_value(self.options, "pred_width", max(1, width // 4))),
                                     num_patches=int(option_value(self.options, "num_patches", 128)),
                                     weights=self.loss_weights())
        self.print("LongRep taps: " + ", ".join(f"{t.name} ({t.module_name}, {t.channels} ch, 1/"
                                                 f"{'x'.join(map(str, t.downsampling))})" for t in model.taps))
        return model

    def configure_optimizers(self):
        """One AdamW with two parameter groups: the U-Net (+ reconstruction conv) without weight decay, i.e.
        Adam as in the paper, and the projector/predictor heads with their own lr and weight decay."""
        net = unwrap(self.network)
        o = self.options
        heads = list(net.longrep_heads.parameters())
        head_ids = {id(p) for p in heads}
        rest = [p for p in net.parameters() if id(p) not in head_ids]
        groups = [{"params": rest, "lr": float(option_value(o, "lr", 2e-4)), "weight_decay": 0.0,
                   "betas": (float(o.get("beta1") if o.get("beta1") is not None else 0.9), 0.999)},
                  {"params": heads, "lr": float(option_value(o, "head_lr", 2e-4)),
                   "weight_decay": float(o.get("head_weight_decay") if o.get("head_weight_decay") is not None
                                         else 1e-2)}]
        opt = torch.optim.AdamW(groups)
        return opt, ConstantThenLinearLR(opt, self.num_epochs, float(o.get("lr_decay_start", 0.5)))

    # ------------------------------------------------------------------ data
    def _maker(self, cases: list[str]) -> PairBatchMaker | None:
        index = LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier, cases)
        try:
            sampler = IntraSubjectPairSampler(index, mode=self.options.get("pair_mode") or "random")
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
