"""Dimensional-collapse check of a U-Net's features: the effective rank (participation ratio of the channel
covariance) of each stage's output on real images. SimSiam-style pretraining can collapse features into a few
directions, which the spec's variance/covariance terms only guard on the tapped decoder layers; comparing a
pretrained checkpoint with a random initialisation shows where it happened.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


def effective_rank(features: torch.Tensor) -> float:
    """(Σλ)² / Σλ² of the channel covariance of `features` (N, C, ...): C for C equally strong independent
    channels, 1 when every channel is a multiple of one signal."""
    return _participation_ratio(features.transpose(0, 1).reshape(features.shape[1], -1))


def _participation_ratio(channels_by_samples: torch.Tensor) -> float:
    f = channels_by_samples.double()
    f = f - f.mean(1, keepdim=True)
    ev = torch.linalg.eigvalsh(f @ f.T / max(f.shape[1] - 1, 1)).clamp(min=0)
    total = float((ev ** 2).sum())
    return float(ev.sum() ** 2 / total) if total > 0 else 0.0


def stage_output_ranks(network: nn.Module, images: Iterable[torch.Tensor]) -> dict[str, tuple[float, int]]:
    """{stage name: (effective rank, channels)} of every encoder and decoder stage output of a
    dynamic-network-architectures U-Net, over all voxels of `images` (each (C, *spatial), cropped to a size the
    network accepts)."""
    modules = {f"encoder.stages.{i}": m for i, m in enumerate(network.encoder.stages)}
    modules.update({f"decoder.stages.{i}": m for i, m in enumerate(network.decoder.stages)})
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: outputs[n].append(o.detach().float()))
             for n, m in modules.items()]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            for x in images:
                factor = _total_stride(network.encoder.strides, x.ndim - 1)
                crop = tuple(slice(0, d - d % f) for d, f in zip(x.shape[1:], factor))
                network(x[(slice(None),) + crop][None].float())
    finally:
        for h in hooks:
            h.remove()
        network.train(was_training)
    # images may differ in size: pool the voxels of all of them per channel
    return {n: (_participation_ratio(torch.cat([o.transpose(0, 1).reshape(o.shape[1], -1) for o in v], dim=1)),
                int(v[0].shape[1]))
            for n, v in outputs.items() if v}


def _total_stride(strides, ndim: int) -> list[int]:
    total = [1] * ndim
    for step in strides:
        step = [step] * ndim if isinstance(step, int) else list(step)
        total = [a * b for a, b in zip(total, step)]
    return total
