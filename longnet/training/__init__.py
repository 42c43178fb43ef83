"""Trainer base class and loop (AMP, torch.compile, DDP, checkpoints, resume, logging); plugins subclass Trainer."""
from longnet.training.requirements import Requirements
from longnet.training.trainer import Trainer, TrainingInterrupted

__all__ = ["Requirements", "Trainer", "TrainingInterrupted"]
