"""`LongRepFinetuner`: nnU-Net's supervised recipe (Dice+CE, deep supervision, its sampler and augmentation)
plus LongRep's longitudinal consistency loss L_cs on unlabelled aligned visit pairs.

Start it from a LongRep pretraining checkpoint with `--pretrained-weights`; `--labelled-subjects N`
(inherited from nnUNetTrainer) gives the one-/few-shot settings. Like the official code it alternates
optimizer steps: a labelled batch (L_sup), then a pair batch (L_cs), and so on (`--cs-mode sum` adds both
in every step instead). Prediction is the generic segmentation predictor (the network is the planned U-Net).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from longnet.api import (IntraSubjectPairSampler, LongitudinalIndex, LongnetError, NON_NEGATIVE_FLOAT, OptionRange,
    POSITIVE_FLOAT, Requirements, SegmentationOptions, nnUNetTrainer, option, output_stage_prefixes, split_batch)
from longnet_longrep.losses import consistency_loss
from longnet_longrep.pairs import PairAugmentation, PairBatchMaker
from longnet_longrep.pretrainer import PairOptions
from longnet_longrep.schedule import ConstantThenLinearLR


@dataclass(frozen=True)
class FinetunerOptions(SegmentationOptions, PairOptions):
    """nnUNetTrainer's options, the pair sampling of L_cs and the finetuning recipe."""

    cs_weight: float = option(1.0, "weight of L_cs", range=NON_NEGATIVE_FLOAT)
    cs_mode: str = option("alternate", "alternate L_sup and L_cs steps (official code), sum both in every step, or off",
                          choices=("alternate", "sum", "off"))
    optimizer: str = option("adam", "adam: the paper's Adam (lr --lr, β1 --beta1, constant then linear decay); sgd: "
                                    "nnU-Net's SGD with poly decay (lr --lr, None: 1e-2)", choices=("adam", "sgd"))
    lr: float | None = option(None, "learning rate (None: 2e-4 for adam, 1e-2 for sgd)", range=POSITIVE_FLOAT)
    beta1: float = option(0.5, "Adam β1 for finetuning", range=OptionRange(float, 0, maximum=1))
    lr_decay_start: float = option(0.5, "adam: fraction of the epochs after which the lr decays linearly to 0",
                                   range=OptionRange(float, 0, maximum=1))
    transfer: str = option("no-output", "pretrained U-Net weights to start from: all but the full-resolution output "
                                        "stage (last decoder stage, its upsampling, the segmentation layers), which "
                                        "pretraining's reconstruction through the K class logits collapses; or all "
                                        "(the paper)", choices=("no-output", "all"))


class LongRepFinetuner(nnUNetTrainer):
    """Segmentation finetuning with L_sup = Dice+CE on labelled visits and L_cs on unlabelled visit pairs."""

    requirements = Requirements(labels="some", min_visits_per_subject=2, min_subjects=1, aligned_visits=True)
    options_class = FinetunerOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cs_mode, self.cs_weight = self.opts.cs_mode, self.opts.cs_weight

    def pretrained_exclude_prefixes(self, network: torch.nn.Module) -> tuple[str, ...]:
        return () if self.opts.transfer == "all" else output_stage_prefixes(network)

    def get_requirements(self) -> Requirements:
        return Requirements(labels="some") if self.cs_mode == "off" else self.requirements

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        o = self.opts
        if o.optimizer == "sgd":
            if o.lr is not None:
                self.initial_lr = o.lr
            return super().configure_optimizers()
        opt = torch.optim.Adam(self.network.parameters(), lr=o.lr if o.lr is not None else 2e-4,
                               betas=(o.beta1, 0.999))
        return opt, ConstantThenLinearLR(opt, self.num_epochs, o.lr_decay_start)

    # ------------------------------------------------------------------ data
    def _pair_iterator(self):
        index = LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier,
                                  self.train_cases)
        try:
            sampler = IntraSubjectPairSampler(index, mode=self.opts.pair_mode)
        except LongnetError as e:
            raise LongnetError(f"LongRepFinetuner needs visit pairs for L_cs ({e}); use --cs-mode off to train "
                               "without them") from None
        conf = self.configuration_manager
        local_bs, _ = split_batch(conf.batch_size, self.dist.world_size, self.dist.rank)
        aug = PairAugmentation(intensity=not self.opts.no_intensity_aug)
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
