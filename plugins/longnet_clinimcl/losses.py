"""InfoNCE over two views (visits) of B distinct subjects.

S = z_a z_bᵀ / τ with L2-normalised rows; the positive of row i is column i (same subject, other visit) and
every other subject's scan is a negative. Symmetric (default, the code's form): ½[CE(S, I) + CE(Sᵀ, I)];
one-directional (the report's Eq. 1): CE(S, I). A collapsed encoder scores exactly log B.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.07, symmetric: bool = True) -> torch.Tensor:
    z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    logits = z_a @ z_b.t() / tau
    labels = torch.arange(len(z_a), device=z_a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), labels))
    return loss
