"""Pieces both STAMP trainers share: the longitudinal index of a split, the Δt window and the optimiser."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

from longnet.api import NON_NEGATIVE_FLOAT, LongitudinalIndex, option
from longnet_stamp.data import cache_budget, pair_dt_range


def split_index(trainer, cases: list[str], cache_size: int = 0) -> LongitudinalIndex:
    """LongitudinalIndex of `cases` in the trainer's preprocessed configuration folder (images are cached by the
    batchers' `ImageCache`, so the index's own LRU is off by default)."""
    return LongitudinalIndex(trainer.preprocessed_dataset_folder, trainer.configuration_manager.data_identifier,
                             cases, cache_size=cache_size)


def cache_bytes() -> int:
    """Per-loader-process image cache: 4 GiB shared by all loader processes."""
    from longnet.api import default_num_workers

    return cache_budget(default_num_workers())


@dataclass(frozen=True)
class WindowOptions:
    """The Δt window of training pairs and of the Δt bins (None: from the training split's visit gaps)."""

    min_days: float | None = option(None, "smallest Δt (days) of a training pair and lower end of the Δt bins "
                                          "(None: the smallest gap between two visits of a subject in the training "
                                          "split)", range=NON_NEGATIVE_FLOAT)
    max_days: float | None = option(None, "largest Δt of a pair and upper end of the Δt bins (None: the largest "
                                          "gap)", range=NON_NEGATIVE_FLOAT)


def resolve_window(options: WindowOptions, index: LongitudinalIndex) -> tuple[float, float]:
    """(min_days, max_days): the command line's values, else the range of the training split's pair gaps."""
    lo, hi = options.min_days, options.max_days
    if lo is None or hi is None:
        data_lo, data_hi = pair_dt_range(index)
        lo = data_lo if lo is None else lo
        hi = data_hi if hi is None else hi
    return float(lo), float(hi)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases and tokens (1-D parameters), as MAE does."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith((".bias", "cls_token", "mask_token", "query")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int,
                     final_factor: float = 1e-4) -> float:
    """Linear warm-up per iteration, then cosine decay to final_factor · base_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return base_lr * (final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * t)))
