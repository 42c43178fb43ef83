"""LongRep's learning-rate schedule: constant, then linear decay towards 0 (stepped once per epoch)."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class ConstantThenLinearLR(LRScheduler):
    """lr = base for epochs < decay_start · max_epochs, then linearly down to base / (remaining epochs) at the
    last epoch (reaching 0 just after it). State is plain numbers, so checkpoints stay weights_only-safe."""

    def __init__(self, optimizer: Optimizer, max_epochs: int, decay_start: float = 0.5, last_epoch: int = -1):
        self.max_epochs = max(1, int(max_epochs))
        self.decay_start = min(max(float(decay_start), 0.0), 1.0)
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        start = int(round(self.decay_start * self.max_epochs))
        if epoch < start:
            return 1.0
        return max(0.0, (self.max_epochs - epoch) / max(1, self.max_epochs - start))

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
