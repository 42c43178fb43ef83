"""`nnUNetTrainer`: nnU-Net's default supervised segmentation recipe as a longnet trainer plugin."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from longnet.data.augmentation import (SpatialAugConfig, spatial_aug_config, training_transforms,
                                       validation_transforms)
from longnet.data.batch_augmentation import BatchAugmenter
from longnet.data.dataset_index import select_labelled_subjects
from longnet.data.segmentation import SegmentationPatchSampler, foreground_flags
from longnet.planning.network import architecture_with_overrides, build_network_from_architecture
from longnet.data import cascade
from longnet.io.checkpoints import unwrap
from longnet.training.distributed import split_batch
from longnet.training.losses import (DeepSupervisionLoss, DiceBCELoss, DiceCELoss, deep_supervision_weights,
                                     tp_fp_fn)
from longnet.training.requirements import Requirements
from longnet.training.schedulers import PolyLRScheduler
from longnet.training.segmentation_options import SegmentationOptions
from longnet.training.trainer import Trainer


class nnUNetTrainer(Trainer):
    """Supervised segmentation, nnU-Net's recipe: SGD poly, Dice+CE, deep supervision, 33% foreground oversampling."""

    requirements = Requirements(labels="some")
    initial_lr = 1e-2
    weight_decay = 3e-5
    momentum = 0.99
    oversample_foreground_percent = 0.33
    probabilistic_oversampling = False  # True: each sample is foreground with that probability (not a fixed quota)
    enable_deep_supervision = True
    data_augmentation = True  # False: training patches are cut like validation patches (no transform at all)
    weight_ce = 1.0  # CE (BCE for regions) and Dice weights of the loss; 0 drops the term
    weight_dice = 1.0
    dice_smooth = 1e-5
    best_metric = "mean_fg_dice"
    best_metric_mode = "max"
    prediction_task = "segmentation"
    options_class = SegmentationOptions


    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.aug = self.configure_augmentation()
        self.inference_allowed_mirroring_axes = tuple(self.aug.mirror_axes) or None
        lm = self.label_manager
        self.regions = lm.foreground_regions if lm.has_regions else None
        self.ignore_label = lm.ignore_label
        self.skipped_unlabelled = 0
        self.batch_augmenter: BatchAugmenter | None = None

    def configure_augmentation(self) -> SpatialAugConfig:
        """Hook: rotation, mirror axes (also the test-time mirroring axes) and enlarged patch of training."""
        return spatial_aug_config(self.configuration_manager.patch_size)

    # ------------------------------------------------------------------ network, optimiser, loss
    @classmethod
    def arch_kwargs_overrides(cls, architecture: dict) -> dict:
        """Hook: changes to the plans' `arch_kwargs` (e.g. the norm op). Saved in checkpoints, so prediction
        builds the same network from plans.json."""
        return {}

    def build_network(self) -> nn.Module:
        arch = architecture_with_overrides(self.configuration_manager.architecture,
                                           self.arch_kwargs_overrides(self.configuration_manager.architecture))
        return build_network_from_architecture(arch, self.num_input_channels,
                                               self.label_manager.num_segmentation_heads,
                                               deep_supervision=self.enable_deep_supervision)

    def checkpoint_state(self, *args, **kwargs) -> dict:
        state = super().checkpoint_state(*args, **kwargs)
        state["arch_kwargs_overrides"] = self.arch_kwargs_overrides(self.configuration_manager.architecture)
        return state

    def configure_optimizers(self):
        opt = self.build_optimizer()
        return opt, self.build_lr_scheduler(opt)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """Hook: nnU-Net's SGD (Nesterov, momentum 0.99)."""
        return torch.optim.SGD(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay,
                               momentum=self.momentum, nesterov=True)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer):
        """Hook: the per-epoch schedule (nnU-Net's poly decay)."""
        return PolyLRScheduler(optimizer, self.num_epochs)

    @property
    def deep_supervision_scales(self) -> list[list[float]] | None:
        """Target scale per decoder output (full resolution first); the coarsest stage has no output."""
        if not self.enable_deep_supervision:
            return None
        strides = np.array(self.configuration_manager.pool_op_kernel_sizes, dtype=float)
        return [list(1 / s) for s in np.cumprod(strides, axis=0)][:-1]

    def build_loss(self) -> nn.Module:
        batch_dice = self.configuration_manager.batch_dice
        weights = {"weight_ce": self.weight_ce, "weight_dice": self.weight_dice, "smooth": self.dice_smooth}
        if self.regions:
            loss = DiceBCELoss(batch_dice, use_ignore_label=self.ignore_label is not None, **weights)
        else:
            loss = DiceCELoss(batch_dice, ignore_label=self.ignore_label, **weights)
        scales = self.deep_supervision_scales
        weights = deep_supervision_weights(len(scales)) if scales else [1.0]
        return DeepSupervisionLoss(loss, weights, keep_zero=self.dist.enabled)

    def initialize(self) -> None:
        super().initialize()
        self.loss = self.build_loss()

    # ------------------------------------------------------------------ data
    def _labelled_cases(self, cases: list[str]) -> list[str]:
        idx = self.dataset_index
        return [c for c in cases if idx is None or c not in idx.visits or idx.labelled(c)]

    def _sampler(self, cases: list[str], train: bool) -> SegmentationPatchSampler:
        conf = self.configuration_manager
        local_bs, offset = split_batch(conf.batch_size, self.dist.world_size, self.dist.rank)
        flags = foreground_flags(conf.batch_size, offset, local_bs, self.oversample_foreground_percent)
        fg_probability = self.oversample_foreground_percent if self.probabilistic_oversampling else None
        augment = train and self.data_augmentation
        if augment and self.augments_on_device:
            self.batch_augmenter = BatchAugmenter(conf.patch_size, self.aug, self.deep_supervision_scales,
                                                  conf.use_mask_for_norm, self.regions, self.ignore_label,
                                                  label_values=range(-1, max(self.label_manager.all_labels) + 1))
            transforms, patch = None, self.aug.initial_patch_size
            self.print(f"training augmentation: batched on {self.device.type} (--augmentation)")
        elif augment:
            transforms = training_transforms(conf.patch_size, self.aug, self.deep_supervision_scales,
                                             conf.use_mask_for_norm, self.regions, self.ignore_label,
                                             cascade_labels=self.cascade_labels,
                                             num_image_channels=self.num_image_channels)
            patch = self.aug.initial_patch_size
        else:
            transforms = validation_transforms(self.deep_supervision_scales, self.regions, self.ignore_label,
                                               self.cascade_labels, self.num_image_channels)
            patch = conf.patch_size
        fg = None
        if self.ignore_label is not None and not self.regions:
            fg = [c for c in self.label_manager.foreground_labels]
        return SegmentationPatchSampler(self.data_folder, cases, patch, conf.patch_size, flags, transforms, fg,
                                        fg_probability=fg_probability,
                                        previous_stage_folder=self.previous_stage_folder())

    # ------------------------------------------------------------------ cascade (3d_cascade_fullres)
    @property
    def cascade_labels(self) -> list[int]:
        return cascade.cascade_labels(self.configuration_manager, self.label_manager)

    @property
    def num_image_channels(self) -> int:
        return super().num_input_channels

    @property
    def num_input_channels(self) -> int:
        return self.num_image_channels + len(self.cascade_labels)

    def previous_stage_folder(self) -> Path | None:
        if not self.configuration_manager.previous_stage or self.output_folder is None:
            return None
        return cascade.previous_stage_folder(self.output_folder.parent, self.trainer_name, self.configuration_manager)

    def check_requirements(self) -> None:
        super().check_requirements()
        folder = self.previous_stage_folder()
        if folder is not None:
            cases = self._labelled_cases(self.train_cases + self.val_cases)
            cascade.check_previous_stage(folder, cases, self.trainer_name, self.configuration_manager)

    def network_input(self, case: str, data: np.ndarray, props: dict, train: bool = False) -> np.ndarray:
        """The network's input for a whole preprocessed case (final validation): the image, plus the previous
        stage's one-hot segmentation for a cascade."""
        folder = self.previous_stage_folder()
        if folder is None:
            return data
        from longnet.io.storage import load_array

        return cascade.append_previous_stage(data, load_array(folder / f"{case}.b2nd"), self.cascade_labels)

    @property
    def augments_on_device(self) -> bool:
        """Batched augmentation after the transfer (`--augmentation`; default on CUDA): the GPU never waits for
        per-sample CPU augmentation, whatever the number of cores."""
        if self.cascade_labels:  # the previous stage's one-hot channels are built per sample on the CPU
            return False
        choice = self.opts.augmentation
        return choice == "gpu" or (choice == "auto" and self.device.type == "cuda")

    def prepare_batch(self, batch):
        batch = super().prepare_batch(batch)
        if isinstance(batch, dict) and "aug_seed" in batch and self.batch_augmenter is not None:
            data, target = self.batch_augmenter(batch["data"], batch["target"], batch["aug_seed"])
            batch = {**batch, "data": data, "target": target}
        return batch

    def labelled_training_cases(self) -> list[str]:
        """Labelled training cases, limited to `--labelled-subjects` subjects when a label budget is set."""
        cases = self._labelled_cases(self.train_cases)
        self.skipped_unlabelled = len(self.train_cases) - len(cases)
        if self.skipped_unlabelled:
            self.print(f"skipping {self.skipped_unlabelled} unlabelled training case(s) (supervised segmentation)")
        n = self.opts.labelled_subjects
        if n is not None and self.dataset_index is not None:
            cases = select_labelled_subjects(self.dataset_index, cases, n, self.opts.labelled_seed)
            subjects = sorted({self.dataset_index.subject_of(c) for c in cases})
            self.print(f"label budget: {n} subject(s) ({', '.join(subjects)}), {len(cases)} labelled case(s)")
        return cases

    def train_loader(self):
        return self.make_batch_iterator(self._sampler(self.labelled_training_cases(), train=True).make_batch, "train")

    def val_loader(self):
        cases = self._labelled_cases(self.val_cases)
        if not cases:
            self.print("no labelled validation cases: per-epoch validation disabled")
            return None
        return self.make_batch_iterator(self._sampler(cases, train=False).make_batch, "val")

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        output = self.network(batch["data"])
        return {"loss": self.loss(output, batch["target"])}

    def validation_step(self, batch: dict) -> dict:
        output = self.network(batch["data"])
        target = batch["target"]
        loss = self.loss(output, target)
        out = output[0] if isinstance(output, (list, tuple)) else output
        tgt = target[0] if isinstance(target, (list, tuple)) else target
        mask = None
        if self.regions:
            if self.ignore_label is not None:
                mask, tgt = 1 - tgt[:, -1:], tgt[:, :-1]
            pred = (torch.sigmoid(out.float()) > 0.5).float()
            tgt_onehot = tgt.float()
        else:
            tgt = tgt.long()
            if self.ignore_label is not None:
                mask = (tgt != self.ignore_label).float()
                tgt = torch.where(tgt == self.ignore_label, torch.zeros_like(tgt), tgt)
            pred = torch.zeros_like(out, dtype=torch.float32).scatter_(1, out.argmax(1, keepdim=True), 1)
            tgt_onehot = torch.zeros_like(pred).scatter_(1, tgt, 1)
        tp, fp, fn = tp_fp_fn(pred, tgt_onehot, mask)
        if not self.regions:
            tp, fp, fn = tp[1:], fp[1:], fn[1:]
        return {"loss": float(loss.detach().float()), "tp": tp.cpu().numpy(), "fp": fp.cpu().numpy(),
                "fn": fn.cpu().numpy()}

    def aggregate_validation(self, outputs: list[dict]) -> dict:
        """Pseudo Dice per class from TP/FP/FN summed over all validation patches (nnU-Net)."""
        tp = np.sum([o["tp"] for o in outputs], 0)
        fp = np.sum([o["fp"] for o in outputs], 0)
        fn = np.sum([o["fn"] for o in outputs], 0)
        denom = 2 * tp + fp + fn
        dice = [float(2 * t / d) if d > 0 else float("nan") for t, d in zip(tp, denom)]
        finite = [d for d in dice if d == d]
        return {"val_loss": float(np.mean([o["loss"] for o in outputs])), "dice_per_class": dice,
                "mean_fg_dice": float(np.mean(finite)) if finite else float("nan")}

    # ------------------------------------------------------------------ prediction contract
    def build_inference_network(self) -> nn.Module:
        """The trained network without deep supervision (one full-resolution output, as the predictor needs)."""
        enabled, self.enable_deep_supervision = self.enable_deep_supervision, False
        try:
            return self.build_network()
        finally:
            self.enable_deep_supervision = enabled

    @classmethod
    def run_prediction(cls, model, folds, input_folder, output_folder, args, device) -> None:
        """Label maps of every input case (nnU-Net's `nnUNetv2_predict`; see `segmentation_prediction`)."""
        from longnet.inference.segmentation_prediction import predict_segmentation

        predict_segmentation(model, folds, input_folder, output_folder, args, device, cls)

    # ------------------------------------------------------------------ end of training
    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        decoder = getattr(unwrap(self.network), "decoder", None)
        if decoder is not None and hasattr(decoder, "deep_supervision"):
            decoder.deep_supervision = enabled

    def final_validation(self) -> None:
        """Predict every validation case and write `validation/summary.json`."""
        from longnet.training.seg_validation import run_final_validation

        self.set_deep_supervision_enabled(False)
        try:
            run_final_validation(self)
        finally:
            self.set_deep_supervision_enabled(self.enable_deep_supervision)
