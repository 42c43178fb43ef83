"""`ExampleTinyTrainer`: nnU-Net's segmentation recipe with AdamW, a constant learning rate and no deep supervision.

It only overrides hooks; the loop, checkpoints, resume, AMP, compile and DDP come from longnet's Trainer. Its one
extra option is declared once, with its default and range, in an options dataclass that extends nnUNetTrainer's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from longnet.api import POSITIVE_FLOAT, SegmentationOptions, nnUNetTrainer, option


@dataclass(frozen=True)
class ExampleOptions(SegmentationOptions):
    example_lr: float = option(1e-3, "AdamW learning rate", range=POSITIVE_FLOAT)  # the flag --example-lr


class ExampleTinyTrainer(nnUNetTrainer):
    """Segmentation with AdamW (constant lr) and no deep supervision: an out-of-tree plugin example."""

    options_class = ExampleOptions
    enable_deep_supervision = False
    num_epochs = 100

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=self.opts.example_lr, weight_decay=1e-4)
        return opt, None
