"""ClinImCL network: a small 3D CNN encoder and an InfoNCE projector.

Encoder: 4 × [MaxPool3d(2) → Conv3d 3³ (pad 1) → BN → ReLU] with widths 16, 32, 64, 128 (96³ → 6³), global
average pooling, Linear(128 → 256) = h (the representation). Projector: Linear(256 → 256) → ReLU →
Linear(256 → 128) → L2-normalise = z (what the loss sees). ~0.4 M parameters at the paper's sizes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "paper": {"cube": 96, "widths": (16, 32, 64, 128), "h_dim": 256, "z_dim": 128, "batch_size": 8},
    "tiny": {"cube": 32, "widths": (4, 8, 16, 32), "h_dim": 32, "z_dim": 16, "batch_size": 4},
}


class ClinImCLEncoder(nn.Module):
    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 64, 128), h_dim: int = 256):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.MaxPool3d(2), nn.Conv3d(c, int(w), 3, padding=1), nn.BatchNorm3d(int(w)),
                       nn.ReLU(inplace=True)]
            c = int(w)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, h_dim)
        self.out_dim = int(h_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


class ClinImCLNet(nn.Module):
    """x → (h, z): h = encoder(x) (exported representation), z = normalise(projector(h)) (loss space)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 64, 128), h_dim: int = 256,
                 z_dim: int = 128, export: str = "z"):
        super().__init__()
        self.encoder = ClinImCLEncoder(in_channels, widths, h_dim)
        self.projector = nn.Sequential(nn.Linear(h_dim, h_dim), nn.ReLU(inplace=True), nn.Linear(h_dim, z_dim))
        self.export = export

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, F.normalize(self.projector(h), dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The exported embedding: z (default, as the spec's MCCD) or h."""
        h, z = self(x)
        return z if self.export == "z" else h
