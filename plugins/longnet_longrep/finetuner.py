"""`LongRepFinetuner`: nnU-Net's supervised recipe (Dice+CE, deep supervision, its sampler and augmentation)
plus LongRep's longitudinal consistency loss L_cs on unlabelled aligned visit pairs.

Start it from a LongRep pretraining checkpoint with `--pretrained-weights`; `--labelled-subjects N`
(inherited from nnUNetTrainer) gives the one-/few-shot settings. Like the official code it alternates
optimizer steps: a labelled batch (L_sup), then a pair batch (L_cs), and so on (`--cs-mode sum` adds both
in every step instead). Prediction is the generic segmentation predictor (the network is the planned U-Net).
"""
from __future__ import annotations

import argparse

import torch

from longnet.api import (IntraSubjectPairSampler, LongitudinalIndex, LongnetError, NON_NEGATIVE_FLOAT, OptionRange,
    POSITIVE_FLOAT, Requirements, nnUNetTrainer, option_value, split_batch)
from longnet_longrep.losses import consistency_loss
from longnet_longrep.pairs import PairAugmentation, PairBatchMaker
from longnet_longrep.pretrainer import add_pair_arguments
from longnet_longrep.schedule import ConstantThenLinearLR


class LongRepFinetuner(nnUNetTrainer):
    """Segmentation finetuning with L_sup = Dice+CE on labelled visits and L_cs on unlabelled visit pairs."""

    requirements = Requirements(labels="some", min_visits_per_subject=2, min_subjects=1, aligned_visits=True)
    option_ranges = {"lr": POSITIVE_FLOAT, "cs_weight": NON_NEGATIVE_FLOAT,
                     "lr_decay_start": OptionRange(float, 0, maximum=1)}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        a = parser.add_argument
        a("--cs-weight", dest="cs_weight", type=float, default=1.0, help="weight of L_cs (default 1)")
        a("--cs-mode", dest="cs_mode", default="alternate", choices=["alternate", "sum", "off"],
          help="alternate L_sup and L_cs steps (official code, default), sum both in every step, or off")
        a("--optimizer", dest="optimizer", default="adam", choices=["adam", "sgd"],
          help="adam: the paper's Adam (lr --lr, β1 --beta1, constant then linear decay); sgd: nnU-Net's SGD "
               "with poly decay (lr --lr, default 1e-2)")
        a("--lr", dest="lr", type=float, default=None, help="learning rate (default 2e-4 adam, 1e-2 sgd)")
        a("--beta1", dest="beta1", type=float, default=0.5, help="Adam β1 for finetuning (default 0.5)")
        a("--lr-decay-start", dest="lr_decay_start", type=float, default=0.5,
          help="adam: fraction of the epochs after which the lr decays linearly to 0 (default 0.5)")
        a("--transfer", dest="transfer", default="no-output", choices=["all", "no-output"],
          help="pretrained U-Net weights to start from: no-output (default): all but the full-resolution output "
               "stage (last decoder stage, its upsampling, the segmentation layers), which pretraining's "
               "reconstruction through the K class logits collapses; all: every weight (the paper)")
        add_pair_arguments(parser)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cs_mode = self.options.get("cs_mode") or "alternate"
        self.cs_weight = float(self.options.get("cs_weight") if self.options.get("cs_weight") is not None else 1.0)

    def pretrained_exclude_prefixes(self, network: torch.nn.Module) -> tuple[str, ...]:
        if (self.options.get("transfer") or "no-output") == "all":
            return ()
        decoder = getattr(network, "decoder", None)
        if decoder is None or not hasattr(decoder, "stages"):
            raise LongnetError("--transfer no-output needs a U-Net with a decoder (dynamic-network-architectures)")
        last = len(decoder.stages) - 1
        return (f"decoder.stages.{last}.", f"decoder.transpconvs.{last}.", "decoder.seg_layers.")

    def get_requirements(self) -> Requirements:
        return Requirements(labels="some") if self.cs_mode == "off" else self.requirements

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        o = self.options
        if (o.get("optimizer") or "adam") == "sgd":
            if o.get("lr") is not None:
                self.initial_lr = float(o["lr"])
            return super().configure_optimizers()
        opt = torch.optim.Adam(self.network.parameters(), lr=float(option_value(o, "lr", 2e-4)),
                               betas=(float(o.get("beta1") if o.get("beta1") is not None else 0.5), 0.999))
        return opt, ConstantThenLinearLR(opt, self.num_epochs, float(o.get("lr_decay_start", 0.5)))

    # ------------------------------------------------------------------ data
    def _pair_iterator(self):
        index = LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier,
                                  self.train_cases)
        try:
            sampler = IntraSubjectPairSampler(index, mode=self.options.get("pair_mode") or "random")
        except LongnetError as e:
            raise LongnetError(f"LongRepFinetuner needs visit pairs for L_cs ({e}); use --cs-mode off to train "
                               "without them") from None
        conf = self.configuration_manager
        local_bs, _ = split_batch(conf.batch_size, self.dist.world_size, self.dist.rank)
        aug = PairAugmentation(intensity=not self.options.get("no_intensity_aug"))
        maker = PairBatchMaker(index, sampler, conf.patch_size, local_bs, aug)
        return self.make_batch_iterator(maker.make_batch, "pairs")

    def train_loader(self):
        if self.cs_mode == "off":
            return super().train_loader()
        cases = self.labelled_training_cases()
        done = self.num_optimizer_steps  # steps already run (the base resumes both streams where they stopped)
        if self.cs_mode == "sum":
            labelled = self.make_batch_iterator(self._sampler(cases, train=True).make_batch, "train")
            return ({**lab, "pair": pair} for lab, pair in zip(labelled, self._pair_iterator()))
        # alternate: even global steps are labelled batches, odd ones pair batches
        labelled = self.make_batch_iterator(self._sampler(cases, train=True).make_batch, "train")
        return _alternate(labelled, self._pair_iterator(), first_is_labelled=done % 2 == 0)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        loss = None
        if "data" in batch:
            sup = self.loss(self.network(batch["data"]), batch["target"])
            self.log("loss_sup", sup)
            loss = sup
        if "pair" in batch:
            pair = batch["pair"]
            b = pair["x_a"].shape[0]
            out = self.network(torch.cat([pair["x_a"], pair["x_b"]]))
            out = out[0] if isinstance(out, (list, tuple)) else out
            cs = consistency_loss(out[:b], out[b:])
            self.log("loss_cs", cs)
            loss = self.cs_weight * cs if loss is None else loss + self.cs_weight * cs
        return {"loss": loss}


def _alternate(labelled, pairs, first_is_labelled: bool):
    """Labelled batch, pair batch, labelled batch, ... (pair batches wrapped as {'pair': ...})."""
    take_labelled = first_is_labelled
    while True:
        yield next(labelled) if take_labelled else {"pair": next(pairs)}
        take_labelled = not take_labelled
