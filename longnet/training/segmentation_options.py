"""Command-line options of `nnUNetTrainer`, kept free of torch so `longnet_train -h` lists them instantly."""
from __future__ import annotations

import argparse

DEFAULT_TRAINER = "nnUNetTrainer"


def add_segmentation_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                               augmentation_on_device: bool = True) -> None:
    """nnUNetTrainer's own flags (its subclasses inherit them through `add_arguments`); `--augmentation` only for
    trainers that can augment batches on the device."""
    parser.add_argument("--val-iters", dest="val_iters", type=int, default=None,
                        help="validation iterations per epoch (default 50)")
    parser.add_argument("--disable-final-validation", dest="disable_final_validation", action="store_true",
                        help="skip the full-image validation after training")
    parser.add_argument("--no-validation-mirroring", dest="no_validation_mirroring", action="store_true",
                        help="final validation without mirroring test-time augmentation (faster)")
    parser.add_argument("--labelled-subjects", dest="labelled_subjects", type=int, default=None,
                        help="label budget for one-/few-shot runs: use the labels of only N subjects of the "
                             "training split (chosen by --labelled-seed); the others count as unlabelled "
                             "(default: every labelled subject)")
    parser.add_argument("--labelled-seed", dest="labelled_seed", type=int, default=0,
                        help="seed that picks the --labelled-subjects subjects (default 0, independent of "
                             "--seed so that different trainers/seeds share one label budget)")
    if augmentation_on_device:
        parser.add_argument("--augmentation", choices=["auto", "cpu", "gpu"], default="auto",
                            help="where training augmentation runs: 'cpu' = per sample in the loader workers "
                                 "(nnU-Net's way), 'gpu' = batched on the training device after the transfer "
                                 "(also works on a CPU device), 'auto' (default) = gpu on CUDA, cpu otherwise")
