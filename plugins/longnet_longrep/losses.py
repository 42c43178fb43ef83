"""LongRep's losses: patchwise SimSiam similarity, variance/covariance regularisers against
degenerate decoder features, encoder/decoder orthogonality and the longitudinal consistency loss.

Pure functions on tensors so each correctness property of the spec can be tested in isolation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = −mean ⟨p/‖p‖, sg(z)/‖z‖⟩ over rows, in [−1, 1]; no gradient reaches z (stop-gradient)."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def symmetric_similarity(p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """½D(p¹, z²) + ½D(p², z¹): each visit's prediction regresses the other visit's projection."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def variance_loss(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_c max(0, 1 − √(Var_c + eps)) over the N×W samples z (VICReg hinge on each channel's std).

    0 when every channel has std ≥ 1; 1 − √eps (0.99) for constant features, whose gradient still pushes
    the channels apart.
    """
    z = z.float()
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Σ_{u≠v} C_uv² / W with C = z̄ᵀz̄ / (n − 1) on centred z: decorrelates the W channels."""
    z = z.float()
    n, w = z.shape
    z = z - z.mean(dim=0, keepdim=True)
    cov = (z.T @ z) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / w


def orthogonality_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean cos(a, b)² ∈ [0, 1] (squared cosine as in the official code; the paper's Eq. 2 is unsquared):
    keeps decoder features from copying the encoder features they receive through the skip connection."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).pow(2).mean()


_DICE = DiceLoss(softmax=True, to_onehot_y=True)


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """L_cs = ½[Dice(logits_a, argmax sg(logits_b)) + Dice(logits_b, argmax sg(logits_a))] on a registered
    unlabelled pair (pseudo-label form of the paper's 1 − Dice(G(x_j), G(x_j+1)))."""
    with torch.no_grad():
        pseudo_a = logits_a.detach().argmax(1, keepdim=True)
        pseudo_b = logits_b.detach().argmax(1, keepdim=True)
    return 0.5 * (_DICE(logits_a.float(), pseudo_b) + _DICE(logits_b.float(), pseudo_a))
