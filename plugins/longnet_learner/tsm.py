"""Temporal Shift Module ResNet (Lin et al., ICCV 2019) as LEARNER's backbone: a 2D ResNet-18 that sees a clip
of T frames (ultrasound frames, or T axial slices of an MRI volume) as a batch of images and exchanges
information between neighbouring frames by shifting a fraction of channels one step along time.

The shift sits before conv1 of every residual block, on the residual branch only (TSM's "residual shift"),
so the identity path keeps each frame's own features. Blocks are torchvision's `BasicBlock`; with widths
(64, 128, 256, 512) and the standard stem this is torchvision's resnet18 without its classifier.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock


def temporal_shift(x: torch.Tensor, n_frames: int, fold_div: int = 8) -> torch.Tensor:
    """(N·T)×C×H×W → same shape: channels [0, C/fold_div) take the NEXT frame's values, channels
    [C/fold_div, 2C/fold_div) the PREVIOUS frame's, the rest stay; frames past either end contribute zeros."""
    nt, c = x.shape[:2]
    if nt % n_frames:
        raise ValueError(f"batch dimension {nt} is not a multiple of n_frames={n_frames}")
    fold = c // fold_div if c >= fold_div else (1 if c >= 3 else 0)
    if fold == 0 or n_frames == 1:
        return x
    x5 = x.view(nt // n_frames, n_frames, c, *x.shape[2:])
    out = torch.zeros_like(x5)
    out[:, :-1, :fold] = x5[:, 1:, :fold]                      # backward in time: frame t sees t+1
    out[:, 1:, fold:2 * fold] = x5[:, :-1, fold:2 * fold]      # forward in time: frame t sees t−1
    out[:, :, 2 * fold:] = x5[:, :, 2 * fold:]
    return out.view_as(x)


class TemporalShift(nn.Module):
    """`temporal_shift` as a module (inserted in front of each block's conv1)."""

    def __init__(self, n_frames: int, fold_div: int = 8):
        super().__init__()
        self.n_frames, self.fold_div = int(n_frames), int(fold_div)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.n_frames, self.fold_div)

    def extra_repr(self) -> str:
        return f"n_frames={self.n_frames}, fold_div={self.fold_div}"


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, down)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class TSMResNet(nn.Module):
    """Clip N×T×C×H×W → u ∈ R^{N×widths[-1]} (global average over space and time).

    `small_stem`: 3×3 stride-1 stem without max-pooling, for the tiny 32² variant (the standard 7×7/2 stem +
    max-pool would leave 8² after the stem)."""

    def __init__(self, in_channels: int, n_frames: int, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (2, 2, 2, 2), small_stem: bool = False, fold_div: int = 8):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != len(blocks):
            raise ValueError(f"{len(widths)} widths for {len(blocks)} stages")
        self.n_frames = int(n_frames)
        if small_stem:
            stem = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                    nn.ReLU(inplace=True)]
        else:
            stem = [nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                    nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        stages, inplanes = [], widths[0]
        for i, (w, b) in enumerate(zip(widths, blocks)):
            stages.append(_layer(inplanes, w, int(b), 1 if i == 0 else 2))
            inplanes = w
        self.features = nn.Sequential(*stem, *stages)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                m.conv1 = nn.Sequential(TemporalShift(self.n_frames, fold_div), m.conv1)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        if t != self.n_frames:
            raise ValueError(f"clip has {t} frames, the network was built for {self.n_frames}")
        f = self.features(x.flatten(0, 1))
        return f.view(n, t, f.shape[1], -1).mean(dim=(1, 3))


class ResNet3DEncoder(nn.Module):
    """The 3D alternative: MONAI's ResNet-18 (basic blocks, 2-2-2-2) on a C×T×H×W volume → pooled features.
    A deviation from the paper's TSM backbone, offered for MRI volumes."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256, 512), small_stem: bool = False):
        super().__init__()
        from monai.networks.nets.resnet import ResNet

        self.net = ResNet("basic", [2, 2, 2, 2], [int(w) for w in widths], spatial_dims=3,
                          n_input_channels=in_channels, conv1_t_size=3 if small_stem else 7,
                          conv1_t_stride=1 if small_stem else 2, no_max_pool=small_stem, feed_forward=False)
        self.out_dim = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
