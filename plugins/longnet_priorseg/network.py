"""Networks of the prior-conditioned trainers, both built from the plans' U-Net so every plan works.

- Channel concatenation (`PriorConcatTrainer`): the planned U-Net itself, with 2C (+ L one-hot prior labels)
  input channels.
- Difference weighting (`DiffWeightingTrainer`, after Rokuss et al., MICCAI LDTM 2024): the planned U-Net's
  encoder runs on both visits with shared weights; at every resolution (skip connections and bottleneck) a
  `DifferenceWeighting` block fuses the two feature maps; the planned decoder runs on the fused features.

Pretrained weights (e.g. a LongRep checkpoint of the plain U-Net, C input channels) load by name; the first
convolution, whose input channels differ, is adapted by `adapt_input_convs`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from longnet.api import LongnetError

PRIOR_INIT_MODES = ("zero", "copy")


class DifferenceWeighting(nn.Module):
    """fused = f_cur + γ ⊙ a ⊙ f_prior, with a = sigmoid(norm(conv1x1(|f_cur − f_prior|))).

    The attention map `a` is large where the two visits' features differ (change) and decides, per voxel and
    channel, how much of the prior enters; the learnable per-channel γ (zero at initialisation) sets whether
    it is added or subtracted and how strongly. With γ = 0 the block passes the current visit's features
    unchanged, so training starts from (and a pretrained single-visit U-Net stays) the plain U-Net.
    """

    def __init__(self, channels: int, conv_op: type, norm_op: type | None = None, norm_kwargs: dict | None = None):
        super().__init__()
        self.attention = conv_op(channels, channels, 1, bias=True)
        self.norm = norm_op(channels, **(norm_kwargs or {})) if norm_op is not None else nn.Identity()
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}.get(conv_op, 3)
        self.gamma = nn.Parameter(torch.zeros(1, channels, *([1] * dims)))

    def weights(self, current: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The attention map a ∈ (0, 1), same shape as the features."""
        return torch.sigmoid(self.norm(self.attention(torch.abs(current - prior))))

    def forward(self, current: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return current + self.gamma * self.weights(current, prior) * prior


class DiffWeightingUNet(nn.Module):
    """Shared planned encoder over (current, prior), difference weighting per stage, planned decoder.

    Input: B×2C×... (current visit's C channels, then the prior's), as for channel concatenation, so the
    sliding-window predictor, mirroring and deep supervision work unchanged. Parameter names `encoder.*` and
    `decoder.*` are the plain U-Net's, so its checkpoints (LongRep pretraining) load by name.
    """

    def __init__(self, unet: nn.Module, channels_per_visit: int):
        super().__init__()
        encoder, decoder = getattr(unet, "encoder", None), getattr(unet, "decoder", None)
        if encoder is None or decoder is None or not hasattr(encoder, "output_channels"):
            raise LongnetError(f"difference weighting needs a dynamic-network-architectures U-Net with .encoder and "
                               f".decoder (got {type(unet).__name__})")
        self.encoder, self.decoder = encoder, decoder
        self.channels_per_visit = int(channels_per_visit)
        norm_op = getattr(encoder, "norm_op", None)
        norm_kwargs = getattr(encoder, "norm_op_kwargs", None) or {}
        self.fusion = nn.ModuleList(DifferenceWeighting(int(ch), encoder.conv_op, norm_op, norm_kwargs)
                                    for ch in encoder.output_channels)

    def fused_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        c = self.channels_per_visit
        if x.shape[1] != 2 * c:
            raise ValueError(f"expected {2 * c} input channels (current ⊕ prior), got {x.shape[1]}")
        b = x.shape[0]
        skips = self.encoder(torch.cat([x[:, :c], x[:, c:]], 0))
        return [f(s[:b], s[b:]) for f, s in zip(self.fusion, skips)]

    def forward(self, x: torch.Tensor):
        return self.decoder(self.fused_skips(x))


def adapt_input_convs(network: nn.Module, source: dict[str, torch.Tensor], channels_per_visit: int,
                      mode: str = "zero", log: Callable[[str], None] = print) -> list[str]:
    """Fill weights whose checkpoint version has fewer input channels (dim 1) from the checkpoint.

    For a kernel of C_in = 2C (+ L) channels and a pretrained one of C channels: the pretrained kernel goes to
    the current visit's channels; the prior's channels get zeros (`zero`: the network starts as the pretrained
    single-visit model and learns to use the prior) or the pretrained kernel too, with both halves scaled by
    0.5 (`copy`: an unchanged subject gives the pretrained response); one-hot prior-label channels get zeros.
    Returns the adapted parameter names.
    """
    if mode not in PRIOR_INIT_MODES:
        raise LongnetError(f"unknown --prior-init {mode!r} (choose from {', '.join(PRIOR_INIT_MODES)})")
    c = int(channels_per_visit)
    adapted = []
    with torch.no_grad():
        for name, p in network.named_parameters():
            src = source.get(name)
            if not isinstance(src, torch.Tensor) or src.ndim != p.ndim or p.ndim < 3 or src.shape == p.shape:
                continue
            if src.shape[0] != p.shape[0] or src.shape[2:] != p.shape[2:] or src.shape[1] != c or p.shape[1] < 2 * c:
                continue
            w = src.to(dtype=p.dtype, device=p.device)
            new = torch.zeros_like(p)
            if mode == "copy":
                new[:, :c], new[:, c:2 * c] = 0.5 * w, 0.5 * w
            else:
                new[:, :c] = w
            p.copy_(new)
            adapted.append(name)
    for name in adapted:
        log(f"  adapted {name}: pretrained kernel on the current visit's channels, prior channels {mode}")
    return adapted
