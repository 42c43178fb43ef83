"""LEARNER stage-1 objective (reconstruction form): L = MSE(ĤS, HS_z) + λ·L_con.

Over all pairs i ≠ j of a batch that belong to different patients: d_ij = 1 − cos(u_i, u_j) and
g_ij = |HS_i − HS_j| / range.
- plain: y_ij = 1[g_ij ≤ τ]; L_con = mean[y·d² + (1 − y)·max(0, m − d)²]
- weighted (default): L_con = mean[(d_ij − m·g_ij/ḡ)²], ḡ = mean gap of the batch's pairs, so embedding
  distance tracks clinical difference.
With λ = 0 the contrastive term is not even computed: the objective is exactly the MSE-only baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_cosine_distance(u: torch.Tensor) -> torch.Tensor:
    """N×N matrix of 1 − cos(u_i, u_j)."""
    un = F.normalize(u.float(), dim=1)
    return 1.0 - un @ un.t()


def pair_mask(n: int, subjects: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """N×N bool: i ≠ j and (when `subjects` is given) different subjects."""
    mask = ~torch.eye(n, dtype=torch.bool, device=device)
    if subjects is not None:
        mask &= subjects.view(-1, 1) != subjects.view(1, -1)
    return mask


def score_gaps(scores: torch.Tensor, score_range: float) -> torch.Tensor:
    s = scores.float().view(-1)
    return (s.view(-1, 1) - s.view(1, -1)).abs() / max(float(score_range), 1e-12)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the pairs in `mask` (0 without any, still connected to the graph); no data-dependent branch or
    shape, so the step compiles into one graph."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1)


def plain_contrastive_from_distances(d: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, margin: float = 0.5,
                                     tau: float = 0.1) -> torch.Tensor:
    y = (g <= tau).float()
    return _masked_mean(y * d ** 2 + (1 - y) * F.relu(margin - d) ** 2, mask)


def weighted_contrastive_from_distances(d: torch.Tensor, g: torch.Tensor, mask: torch.Tensor,
                                        margin: float = 0.5) -> torch.Tensor:
    g_bar = _masked_mean(g, mask)
    target = torch.where(g_bar > 0, margin * g / g_bar.clamp_min(1e-12), torch.zeros_like(g))
    return _masked_mean((d - target) ** 2, mask)


def contrastive_loss(features: torch.Tensor, scores: torch.Tensor, score_range: float, kind: str = "weighted",
                     margin: float = 0.5, tau: float = 0.1, subjects: torch.Tensor | None = None) -> torch.Tensor:
    """L_con of one batch (`kind` 'weighted' or 'plain'); same-subject pairs excluded when `subjects` is given."""
    d = pairwise_cosine_distance(features)
    g = score_gaps(scores, score_range).to(d.device)
    mask = pair_mask(len(d), subjects, d.device)
    if kind == "weighted":
        return weighted_contrastive_from_distances(d, g, mask, margin)
    if kind == "plain":
        return plain_contrastive_from_distances(d, g, mask, margin, tau)
    raise ValueError(f"unknown contrastive loss {kind!r} (weighted or plain)")


def learner_loss(pred_z: torch.Tensor, target_z: torch.Tensor, features: torch.Tensor, scores: torch.Tensor,
                 score_range: float, weight: float = 1.0, kind: str = "weighted", margin: float = 0.5,
                 tau: float = 0.1, subjects: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{'loss', 'mse'[, 'con']}: MSE on z-scored health scores plus weight·L_con (skipped when weight == 0)."""
    mse = F.mse_loss(pred_z.float(), target_z.float())
    if weight == 0:
        return {"loss": mse, "mse": mse.detach()}
    con = contrastive_loss(features, scores, score_range, kind, margin, tau, subjects)
    return {"loss": mse + weight * con, "mse": mse.detach(), "con": con.detach()}
