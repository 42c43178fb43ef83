"""Options of `nnUNetTrainer` (and the trainers built on it), kept free of torch so `longnet_train -h` lists them
instantly."""
from __future__ import annotations

from dataclasses import dataclass

from longnet.training.options import NON_NEGATIVE_INT, POSITIVE_INT, option

DEFAULT_TRAINER = "nnUNetTrainer"


@dataclass(frozen=True)
class SegmentationOptions:
    """nnUNetTrainer's own options; trainers built on it extend this dataclass."""

    val_iters: int | None = option(None, "validation iterations per epoch (None: 50)", range=NON_NEGATIVE_INT)
    disable_final_validation: bool = option(False, "skip the full-image validation after training")
    no_validation_mirroring: bool = option(False, "final validation without mirroring test-time augmentation "
                                                  "(faster)")
    labelled_subjects: int | None = option(None, "label budget for one-/few-shot runs: use the labels of only N "
                                                 "subjects of the training split (chosen by --labelled-seed); the "
                                                 "others count as unlabelled (None: every labelled subject)",
                                           range=POSITIVE_INT)
    labelled_seed: int = option(0, "seed that picks the --labelled-subjects subjects (independent of --seed so "
                                   "that different trainers/seeds share one label budget)", range=NON_NEGATIVE_INT)
    augmentation: str = option("auto", "where training augmentation runs: 'cpu' = per sample in the loader workers "
                                       "(nnU-Net's way), 'gpu' = batched on the training device after the transfer "
                                       "(also works on a CPU device), 'auto' = gpu on CUDA, cpu otherwise",
                               choices=("auto", "cpu", "gpu"))
