"""Trainer base class and loop (AMP, torch.compile, DDP, checkpoints, resume, logging); plugins subclass Trainer.

The names below are loaded on first use, so light submodules (options, segmentation_options) import without
torch and `longnet_train -h` stays fast.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Requirements", "Trainer", "TrainingInterrupted"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "TrainingInterrupted"):
        from longnet.training import trainer

        return getattr(trainer, name)
    if name == "Requirements":
        from longnet.training.requirements import Requirements

        return Requirements
    raise AttributeError(f"module 'longnet.training' has no attribute {name!r}")
