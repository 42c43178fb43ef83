"""Attention-pooling probe on a frozen STAMP encoder (downstream).

One learned query attends (multi-head, K/V linear without bias) over the probe tokens; the pooled vector
goes through a Linear to one logit. The encoder is frozen: no gradients, always in eval mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet_stamp.model import STAMPNet


def default_heads(width: int, preferred: int = 12) -> int:
    """The largest head count <= preferred that divides width."""
    for h in range(min(preferred, width), 0, -1):
        if width % h == 0:
            return h
    return 1


class AttentionPoolProbe(nn.Module):
    """tokens B×N×D → logit B."""

    def __init__(self, dim: int, heads: int, num_queries: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"probe width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, 1)
        for m in (self.k, self.v, self.out):
            nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        h = self.heads
        q = self.query.expand(b, -1, -1).reshape(b, -1, h, d // h).transpose(1, 2)
        k = self.k(tokens).reshape(b, n, h, d // h).transpose(1, 2)
        v = self.v(tokens).reshape(b, n, h, d // h).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d).mean(1)
        return self.out(pooled).squeeze(-1)


class STAMPProbeNet(nn.Module):
    """Frozen STAMPNet (`stamp`) + trainable `probe`; `forward(image, dt_days)` → logits (one prior sample).

    `use_latent=False` probes the encoder tokens of a stochastic encoder directly (the paper's deterministic
    mode), which separates the encoder's quality from what the prior path adds."""

    def __init__(self, stamp: STAMPNet, heads: int | None = None, use_latent: bool = True):
        super().__init__()
        self.stamp = stamp
        self.use_latent = bool(use_latent and stamp.stochastic)
        for p in self.stamp.parameters():
            p.requires_grad_(False)
        width = stamp.probe_width(self.use_latent)
        self.probe = AttentionPoolProbe(width, heads or default_heads(width))
        self.stamp.eval()

    def train(self, mode: bool = True) -> "STAMPProbeNet":
        super().train(mode)
        self.stamp.eval()  # frozen encoder: never in training mode
        return self

    @torch.no_grad()
    def encode(self, image: torch.Tensor, dt_days: torch.Tensor) -> torch.Tensor:
        """Frozen encoder tokens of the scans with the horizon's Δt on the CLS (cacheable: nothing random)."""
        return self.stamp.encode_past(image, dt_days)[0]

    def forward(self, image: torch.Tensor | None, dt_days: torch.Tensor | None,
                encoded: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from scans, or from their cached `encode` output (one prior sample of z)."""
        if encoded is None:
            encoded = self.encode(image, dt_days)
        with torch.no_grad():
            tokens = self.stamp.tokens_from_encoded(encoded, 1, self.use_latent)[0]
        return self.probe(tokens.detach())

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor | None, dt_days: torch.Tensor | None, num_samples: int = 1,
                      encoded: torch.Tensor | None = None) -> torch.Tensor:
        """Mean probability over `num_samples` prior draws of z (deterministic encoders: one pass)."""
        if encoded is None:
            encoded = self.encode(image, dt_days)
        seqs = self.stamp.tokens_from_encoded(encoded, num_samples if self.use_latent else 1, self.use_latent)
        return torch.stack([torch.sigmoid(self.probe(t).float()) for t in seqs]).mean(0)
