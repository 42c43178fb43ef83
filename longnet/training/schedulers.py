"""Learning-rate schedules stepped once per epoch by the Trainer (state is plain numbers: checkpoint-safe)."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class PolyLRScheduler(LRScheduler):
    """lr = initial · (1 − epoch / max_epochs)^exponent (nnU-Net's schedule, exponent 0.9)."""

    def __init__(self, optimizer: Optimizer, max_epochs: int, exponent: float = 0.9, last_epoch: int = -1):
        self.max_epochs, self.exponent = max(1, int(max_epochs)), float(exponent)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        frac = max(0.0, 1 - min(self.last_epoch, self.max_epochs) / self.max_epochs)
        return [base * frac ** self.exponent for base in self.base_lrs]


class WarmupCosineScheduler(LRScheduler):
    """Linear warm-up over `warmup_epochs`, then cosine decay to `final_factor` · initial (for plugins)."""

    def __init__(self, optimizer: Optimizer, max_epochs: int, warmup_epochs: int = 0, final_factor: float = 0.0,
                 last_epoch: int = -1):
        self.max_epochs, self.warmup_epochs = max(1, int(max_epochs)), max(0, int(warmup_epochs))
        self.final_factor = float(final_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e = self.last_epoch
        if e < self.warmup_epochs:
            f = (e + 1) / (self.warmup_epochs + 1)
        else:
            span = max(1, self.max_epochs - self.warmup_epochs)
            t = min(1.0, (e - self.warmup_epochs) / span)
            f = self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))
        return [base * f for base in self.base_lrs]
