"""`ExampleTinyTrainer`: nnU-Net's segmentation recipe with AdamW, a constant learning rate and no deep supervision.

It only overrides hooks; the loop, checkpoints, resume, AMP, compile and DDP come from longnet's Trainer.
"""
from __future__ import annotations

import argparse

import torch

from longnet.api import nnUNetTrainer


class ExampleTinyTrainer(nnUNetTrainer):
    """Segmentation with AdamW (constant lr) and no deep supervision: an out-of-tree plugin example."""

    enable_deep_supervision = False
    num_epochs = 100

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--example-lr", dest="example_lr", type=float, default=1e-3,
                            help="AdamW learning rate (default 1e-3)")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=float(self.options.get("example_lr") or 1e-3),
                                weight_decay=1e-4)
        return opt, None
