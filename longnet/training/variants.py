"""nnU-Net 2.x's trainer variants under their nnU-Net names, so `-tr nnUNetTrainer_250epochs` etc. keep working.

Each variant only sets a class attribute of `nnUNetTrainer` or overrides one of its small hooks
(`configure_augmentation`, `arch_kwargs_overrides`, `build_optimizer`, `build_lr_scheduler`). The `_Xepochs`
family is generated below under stable module-level names; every name is also an entry point in setup.cfg.
An explicit `--epochs` still wins over a variant's epoch count.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn as nn

from longnet.data.augmentation import SpatialAugConfig, enlarged_patch_size
from longnet.data.segmentation import foreground_flags
from longnet.training.schedulers import WarmupCosineScheduler
from longnet.training.segmentation import nnUNetTrainer

EPOCH_COUNTS = (1, 5, 10, 20, 50, 100, 250, 500, 750, 2000, 4000, 8000)
EPOCH_COUNTS_NO_MIRRORING = (250, 2000, 4000, 8000)

# ---------------------------------------------------------------------------------------------- augmentation
class nnUNetTrainerNoMirroring(nnUNetTrainer):
    """No mirroring, neither in training augmentation nor as test-time augmentation."""

    def configure_augmentation(self) -> SpatialAugConfig:
        return dataclasses.replace(super().configure_augmentation(), mirror_axes=())


class nnUNetTrainer_onlyMirror01(nnUNetTrainer):
    """Mirroring (training and test time) along axes 0 and 1 only in 3D, axis 0 only in 2D."""

    def configure_augmentation(self) -> SpatialAugConfig:
        axes = (0, 1) if len(self.configuration_manager.patch_size) == 3 else (0,)
        return dataclasses.replace(super().configure_augmentation(), mirror_axes=axes)


class nnUNetTrainer_onlyMirror01_1500ep(nnUNetTrainer_onlyMirror01):
    """nnUNetTrainer_onlyMirror01 for 1500 epochs."""

    num_epochs = 1500


class nnUNetTrainerNoDA(nnUNetTrainer):
    """No data augmentation: no spatial/intensity transforms, no mirroring (nor at test time), no enlarged patch."""

    data_augmentation = False

    def configure_augmentation(self) -> SpatialAugConfig:
        aug = super().configure_augmentation()
        return dataclasses.replace(aug, mirror_axes=(), initial_patch_size=list(self.configuration_manager.patch_size))


class nnUNetTrainer_noDummy2DDA(nnUNetTrainer):
    """Never in-plane ("dummy 2D") augmentation for anisotropic 3D patches: full 3D rotation of ±30°."""

    def configure_augmentation(self) -> SpatialAugConfig:
        aug = super().configure_augmentation()
        if not aug.dummy_2d:
            return aug
        rotation = (-30 * math.pi / 180, 30 * math.pi / 180)
        initial = enlarged_patch_size(list(self.configuration_manager.patch_size), rotation)
        return dataclasses.replace(aug, rotation=rotation, dummy_2d=False, initial_patch_size=initial)


# ---------------------------------------------------------------------------------------------- network
class nnUNetTrainerNoDeepSupervision(nnUNetTrainer):
    """One output at full resolution, loss on it alone."""

    enable_deep_supervision = False


class nnUNetTrainerBN(nnUNetTrainer):
    """BatchNorm instead of the plans' norm op (synchronised across processes under CUDA DDP)."""

    @classmethod
    def arch_kwargs_overrides(cls, architecture: dict) -> dict:
        dim = len(architecture["arch_kwargs"]["kernel_sizes"][0])
        return {"norm_op": f"torch.nn.modules.batchnorm.BatchNorm{dim}d"}

    def build_network(self) -> nn.Module:
        net = super().build_network()
        if self.dist.enabled and self.device.type == "cuda":  # statistics of the global batch, as nnU-Net
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return net


# ---------------------------------------------------------------------------------------------- loss
class nnUNetTrainerCELoss(nnUNetTrainer):
    """Cross-entropy only (binary cross-entropy for region-based datasets), with deep supervision."""

    weight_dice = 0.0


class nnUNetTrainerCELoss_5epochs(nnUNetTrainerCELoss):
    """nnUNetTrainerCELoss for 5 epochs."""

    num_epochs = 5


class nnUNetTrainerDiceLoss(nnUNetTrainer):
    """Soft Dice only, with deep supervision."""

    weight_ce = 0.0


class nnUNetTrainerDiceCELoss_noSmooth(nnUNetTrainer):
    """Dice + CE with a Dice smoothing term of 0."""

    dice_smooth = 0.0


# ---------------------------------------------------------------------------------------------- optimiser, schedule
class nnUNetTrainerCosAnneal(nnUNetTrainer):
    """SGD with cosine annealing of the learning rate to 0 over the epochs instead of poly decay."""

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer):
        return WarmupCosineScheduler(optimizer, self.num_epochs)


class nnUNetTrainerAdam(nnUNetTrainer):
    """AdamW (amsgrad) with nnU-Net's initial lr 1e-2, weight decay 3e-5 and poly decay."""

    def build_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay,
                                 amsgrad=True)


class nnUNetTrainerAdam1en3(nnUNetTrainerAdam):
    """nnUNetTrainerAdam with initial lr 1e-3."""

    initial_lr = 1e-3


class nnUNetTrainerAdam3en4(nnUNetTrainerAdam):
    """nnUNetTrainerAdam with initial lr 3e-4."""

    initial_lr = 3e-4


class nnUNetTrainerVanillaAdam(nnUNetTrainer):
    """Plain Adam (L2 weight decay 3e-5) with initial lr 1e-2 and poly decay."""

    def build_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)


class nnUNetTrainerVanillaAdam1en3(nnUNetTrainerVanillaAdam):
    """nnUNetTrainerVanillaAdam with initial lr 1e-3."""

    initial_lr = 1e-3


class nnUNetTrainerVanillaAdam3en4(nnUNetTrainerVanillaAdam):
    """nnUNetTrainerVanillaAdam with initial lr 3e-4."""

    initial_lr = 3e-4


# ---------------------------------------------------------------------------------------------- sampling
class nnUNetTrainer_probabilisticOversampling(nnUNetTrainer):
    """Each sample is centred on foreground with a probability (default: the fraction the default quota gives
    for the plans' batch size, e.g. 0.5 for batch 2) instead of a fixed number per batch."""

    probabilistic_oversampling = True
    fixed_probability: float | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.fixed_probability is not None:
            self.oversample_foreground_percent = self.fixed_probability
        else:
            bs = self.configuration_manager.batch_size
            self.oversample_foreground_percent = float(np.mean(foreground_flags(bs, 0, bs,
                                                                                self.oversample_foreground_percent)))


class nnUNetTrainer_probabilisticOversampling_033(nnUNetTrainer_probabilisticOversampling):
    """Probabilistic foreground oversampling with probability 0.33."""

    fixed_probability = 0.33


class nnUNetTrainer_probabilisticOversampling_010(nnUNetTrainer_probabilisticOversampling):
    """Probabilistic foreground oversampling with probability 0.1."""

    fixed_probability = 0.1


# ---------------------------------------------------------------------------------------------- training length
def _epochs_variant(epochs: int, base: type, suffix: str = "") -> type:
    """A subclass of `base` that differs only in its epoch count, bound to its nnU-Net name in this module."""
    name = "nnUNetTrainer_1epoch" if epochs == 1 else f"nnUNetTrainer_{epochs}epochs{suffix}"
    doc = f"{base.__name__} for {epochs} epoch{'s' if epochs != 1 else ''}."
    cls = type(name, (base,), {"num_epochs": epochs, "__doc__": doc, "__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


EPOCH_VARIANTS = [_epochs_variant(n, nnUNetTrainer) for n in EPOCH_COUNTS] + [
    _epochs_variant(n, nnUNetTrainerNoMirroring, "_NoMirroring") for n in EPOCH_COUNTS_NO_MIRRORING]


def variant_names() -> list[str]:
    """Every trainer class this module defines (each must be an entry point of `longnet.trainers`)."""
    return sorted(name for name, obj in globals().items()
                  if isinstance(obj, type) and issubclass(obj, nnUNetTrainer) and obj is not nnUNetTrainer)
