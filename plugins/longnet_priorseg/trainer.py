"""`PriorConcatTrainer`: nnU-Net's segmentation recipe with a prior visit of the same subject as extra input.

Input = current visit (C channels) ⊕ a prior visit (C channels) [⊕ the prior's segmentation, one-hot, L
channels with `--prior-seg gt`], on one grid (aligned preprocessing, `--align rigid`). The prior is the
immediately preceding visit (`--prior immediate`) or, in training, any earlier visit drawn at random
(`--prior random`, LongiSeg's random prior); inference always uses the immediately preceding visit. A first
visit uses itself as prior with zero segmentation channels.

Prior segmentation channels: in training the prior's ground truth where it is labelled, else zeros, corrupted
like nnU-Net's cascade input; at inference (final validation and `longnet_predict`) the model's own prediction
of the prior visit, chained visit by visit. Per-epoch validation patches use the ground truth.

Augmentation, loss, deep supervision, optimiser and schedule are nnUNetTrainer's; the two visits are stacked
before the transforms, so they stay paired (`longnet_priorseg.transforms`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from longnet.api import (CaseReader, LongitudinalIndex, LongnetError, POSITIVE_FLOAT, Requirements,
    SegmentationOptions, architecture_with_overrides, build_network_from_architecture, foreground_flags,
    load_checkpoint, nnUNetTrainer, option, output_stage_prefixes, split_batch, strip_prefixes, unwrap)
from longnet_priorseg.network import PRIOR_INIT_MODES, DiffWeightingUNet, adapt_input_convs
from longnet_priorseg.priors import PRIOR_MODES, PRIOR_SEG_MODES, PriorTable, network_input_array
from longnet_priorseg.sampler import ALIGN_HINT, PriorPatchSampler
from longnet_priorseg.transforms import INTENSITY_MODES, prior_transforms

TRANSFER_MODES = ("no-output", "all", "encoder")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class PriorOptions(SegmentationOptions):
    """nnUNetTrainer's options plus the prior conditioning (both prior trainers)."""

    prior: str = option("immediate", "training prior: the immediately preceding visit or any earlier visit at random "
                                     "(LongiSeg's random prior); inference always uses the preceding visit",
                        choices=PRIOR_MODES)
    prior_seg: str = option("none", "gt: add the prior's segmentation as one-hot input channels (training: ground "
                                    "truth where the prior is labelled, else zeros; inference: the model's own "
                                    "prediction of the prior, chained)", choices=PRIOR_SEG_MODES)
    pair_intensity: str = option("same", "same: one set of random intensity-augmentation parameters for both "
                                         "visits; independent: nnU-Net's per-channel draws", choices=INTENSITY_MODES)
    transfer: str = option("no-output", "with --pretrained-weights (e.g. a LongRepPretrainer checkpoint): which U-Net "
                                        "weights to take: all but the full-resolution output stage, all, or encoder "
                                        "only", choices=TRANSFER_MODES)
    optimizer: str = option("sgd", "sgd: nnU-Net's SGD; adam: Adam with L2 weight decay 3e-5 and the same poly "
                                   "decay (nnUNetTrainerVanillaAdam's optimiser), which learns faster in short CPU "
                                   "schedules", choices=OPTIMIZERS)
    lr: float | None = option(None, "initial learning rate (None: 1e-2 for sgd, 1e-3 for adam)", range=POSITIVE_FLOAT)
    prior_init: str = option("zero", "with --pretrained-weights: the first convolution's prior channels start at zero "
                                     "or as a copy of the pretrained kernel (both halves x0.5)",
                             choices=PRIOR_INIT_MODES)


def build_prior_network(kind: str, architecture: dict, channels_per_visit: int, n_prior_labels: int,
                        num_heads: int, deep_supervision: bool) -> nn.Module:
    """'concat': the planned U-Net on 2C + L channels; 'diff': `DiffWeightingUNet` around the planned U-Net."""
    if kind == "concat":
        return build_network_from_architecture(architecture, 2 * channels_per_visit + n_prior_labels, num_heads,
                                               deep_supervision=deep_supervision)
    unet = build_network_from_architecture(architecture, channels_per_visit, num_heads,
                                           deep_supervision=deep_supervision)
    return DiffWeightingUNet(unet, channels_per_visit)


class PriorConcatTrainer(nnUNetTrainer):
    """Segmentation of a visit conditioned on an earlier visit of the same subject (channel concatenation)."""

    requirements = Requirements(labels="some", aligned_visits=True)
    options_class = PriorOptions
    hidden_options = ("augmentation",)  # the visit pair is augmented per sample on the CPU
    prediction_task = "longitudinal_segmentation"
    network_kind = "concat"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.opts
        self.prior_mode, self.prior_seg, self.pair_intensity = o.prior, o.prior_seg, o.pair_intensity
        if o.augmentation == "gpu":
            raise LongnetError(f"{type(self).__name__} augments the visit pair per sample on the CPU (one transform "
                               "for both visits); --augmentation gpu is not available for it")
        if self.label_manager.has_regions and self.prior_seg != "none":
            raise LongnetError("--prior-seg gt needs a label-based dataset (regions are not supported)")
        self.optimizer_name = o.optimizer
        self.initial_lr = o.lr if o.lr is not None else (1e-3 if o.optimizer == "adam" else self.initial_lr)
        self._val_table: PriorTable | None = None
        self._val_predictions: dict[str, np.ndarray] = {}
        self._val_predictor = None

    # ------------------------------------------------------------------ network
    @property
    def prior_seg_labels(self) -> list[int]:
        return list(self.label_manager.foreground_labels) if self.prior_seg == "gt" else []

    @property
    def num_input_channels(self) -> int:
        return 2 * self.num_image_channels + len(self.prior_seg_labels)

    def build_network(self) -> nn.Module:
        arch = architecture_with_overrides(self.configuration_manager.architecture,
                                           self.arch_kwargs_overrides(self.configuration_manager.architecture))
        return build_prior_network(self.network_kind, arch, self.num_image_channels, len(self.prior_seg_labels),
                                   self.label_manager.num_segmentation_heads, self.enable_deep_supervision)

    def build_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return super().build_optimizer()

    def pretrained_exclude_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        mode = self.opts.transfer
        if mode == "all":
            return ()
        if mode == "encoder":
            return ("decoder.", "fusion.")
        return output_stage_prefixes(network)

    def initialize(self) -> None:
        super().initialize()
        path = self.options.get("pretrained_weights")
        if path:  # tensors matching by name and shape are loaded by the base; adapt the input convolution(s)
            source = strip_prefixes(load_checkpoint(path)["network_weights"])
            net = unwrap(self.network)
            skip = self.pretrained_exclude_prefixes(net)
            source = {k: v for k, v in source.items() if not k.startswith(skip)}
            adapt_input_convs(net, source, self.num_image_channels, self.opts.prior_init,
                              self.print)

    # ------------------------------------------------------------------ data
    def check_requirements(self) -> None:
        super().check_requirements()
        if self.configuration_manager.previous_stage:
            raise LongnetError(f"{self.trainer_name} does not support cascade configurations "
                               f"({self.configuration_name})")
        self._check_one_grid(self.train_cases + self.val_cases)

    def _check_one_grid(self, cases: list[str]) -> None:
        """Every subject's visits must share one grid (aligned preprocessing): refuse before training."""
        if self.preprocessed_dataset_folder is None or not cases:
            return
        index = LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier,
                                  cases)
        reader = CaseReader(self.data_folder)
        for subject, visits in index.subjects.items():
            shapes = {tuple(reader.open(c)[0].shape[1:]) for c in visits}
            if len(shapes) > 1:
                raise LongnetError(f"{self.trainer_name}: the visits of subject {subject} are not on one grid "
                                   f"(shapes {sorted(shapes)}); {ALIGN_HINT}", self.data_folder)

    def prior_table(self, cases: list[str]) -> PriorTable:
        """Priors among `cases` (one split side, labelled or not), in each subject's time order."""
        index = LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier,
                                  cases)
        return PriorTable.from_index(index)

    @property
    def augments_on_device(self) -> bool:
        return False  # the visits are paired per sample on the CPU (one transform for the stacked channels)

    def _sampler(self, cases: list[str], train: bool) -> PriorPatchSampler:
        conf = self.configuration_manager
        local_bs, offset = split_batch(conf.batch_size, self.dist.world_size, self.dist.rank)
        flags = foreground_flags(conf.batch_size, offset, local_bs, self.oversample_foreground_percent)
        fg_probability = self.oversample_foreground_percent if self.probabilistic_oversampling else None
        augment = train and self.data_augmentation
        transforms = prior_transforms(conf.patch_size, self.aug, self.deep_supervision_scales,
                                      self.num_image_channels, self.prior_seg_labels, train=augment,
                                      intensity=self.pair_intensity, use_mask_for_norm=conf.use_mask_for_norm,
                                      regions=self.regions, ignore_label=self.ignore_label)
        patch = self.aug.initial_patch_size if augment else conf.patch_size
        fg = list(self.label_manager.foreground_labels) if self.ignore_label is not None and not self.regions else None
        table = self.prior_table(self.train_cases if train else self.val_cases)
        mode = self.prior_mode if train else "immediate"
        return PriorPatchSampler(self.data_folder, cases, patch, conf.patch_size, flags, transforms, table, mode,
                                 bool(self.prior_seg_labels), fg, fg_probability=fg_probability)

    # ------------------------------------------------------------------ final validation (chained priors)
    def network_input(self, case: str, data: np.ndarray, props: dict, train: bool = False) -> np.ndarray:
        """Whole-case input for final validation: the immediately preceding validation visit as prior and,
        with `--prior-seg gt`, the model's own prediction of that visit (chained back to the first visit)."""
        if self._val_table is None:
            self._val_table = self.prior_table(self.val_cases)
        prior = self._val_table.immediate(case) if case in self._val_table.earlier else case
        pdata = data if prior == case else CaseReader(self.data_folder).load(prior)[0]
        pseg = self._predicted_seg(prior) if self.prior_seg_labels and prior != case else None
        return network_input_array(data, pdata, pseg, self.prior_seg_labels)

    def _predicted_seg(self, case: str) -> np.ndarray:
        """The model's label map of a validation visit on its preprocessed grid (memoised per run)."""
        if case not in self._val_predictions:
            from longnet.api import logits_to_segmentation
            from longnet.api import Predictor

            if self._val_predictor is None:
                self._val_predictor = Predictor.from_trainer(
                    self, use_mirroring=not self.opts.no_validation_mirroring)
            data, _, props = CaseReader(self.data_folder).load(case)
            logits = self._val_predictor.predict_preprocessed(self.network_input(case, data, props))
            self._val_predictions[case] = logits_to_segmentation(logits.numpy(), self.label_manager)
        return self._val_predictions[case]

    def final_validation(self) -> None:
        self._val_predictions, self._val_predictor = {}, None
        super().final_validation()

    # ------------------------------------------------------------------ prediction (longnet_predict)
    @classmethod
    def add_prediction_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from longnet_priorseg.predict import add_prediction_arguments

        add_prediction_arguments(parser)

    @classmethod
    def run_prediction(cls, model, folds, input_folder: Path, output_folder: Path, args: argparse.Namespace,
                       device: torch.device) -> None:
        from longnet_priorseg.predict import run_prediction

        run_prediction(cls, model, folds, input_folder, output_folder, args, device)
