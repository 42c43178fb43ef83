"""Δt handling shared by pretraining, probing and prediction.

Δt (days) → u = (Δt − min)/(max − min) clipped to [0, 1] → nearest of K bins → DiT-style sinusoid → MLP.
The window (min, max) and K live in buffers of `DtBinning`, so they are saved with the weights and a probe
cannot bin its horizon differently from the pretraining pairs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """[cos(t·ω_k), sin(t·ω_k)], ω_k = exp(−ln(P)·k/(dim/2)), k < dim/2 (zero-padded for odd dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class DtBinning(nn.Module):
    """Maps Δt in days to an integer bin in {0, …, K−1}; the window is stored as buffers (saved, not trained)."""

    def __init__(self, dt_min: float, dt_max: float, n_bins: int):
        super().__init__()
        self.n_bins = int(n_bins)
        self.register_buffer("dt_min", torch.tensor(float(dt_min)))
        self.register_buffer("dt_max", torch.tensor(float(dt_max)))

    def normalise(self, dt_days: torch.Tensor) -> torch.Tensor:
        """u ∈ [0, 1] (a window of zero width maps everything to 0)."""
        span = torch.clamp(self.dt_max - self.dt_min, min=1e-6)
        return torch.clamp((dt_days.float() - self.dt_min) / span, 0.0, 1.0)

    def forward(self, dt_days: torch.Tensor) -> torch.Tensor:
        if self.n_bins == 1:
            return torch.zeros_like(dt_days, dtype=torch.long)
        return torch.round(self.normalise(dt_days) * (self.n_bins - 1)).long()


class DtEmbedding(nn.Module):
    """Integer Δt bin → sinusoid(F, P) → Linear(F→D) → SiLU → Linear(D→D) (DiT's TimestepEmbedder)."""

    def __init__(self, out_dim: int, freq_dim: int = 64, max_period: float = 160.0):
        super().__init__()
        self.freq_dim, self.max_period = int(freq_dim), float(max_period)
        self.mlp = nn.Sequential(nn.Linear(self.freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, bins: torch.Tensor) -> torch.Tensor:
        emb = timestep_sinusoid(bins, self.freq_dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
