"""Least-squares fit of the context filter of `TFMUNet` (`--context-residual`).

The velocity target y − x̃ does not depend on the flow step, so the best linear forecast from the filled context
(a 3×3×3 filter over all T·C slot channels, plus a bias per channel) is a linear regression, solved exactly from
training crops instead of being approached by a few hundred noisy Adam steps. The network then learns the
non-linear residual around it. The normal equations are accumulated batch by batch (163 features for T·C = 6),
so memory stays small whatever the number of crops.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from longnet_tfm.flow import broadcast_target, fold_slots


def _neighbourhoods(x: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """Features of the sampled `voxels` (N×4 indices b, z, y, x) of x (B×n×Z×Y×X): each one's zero-padded 3×3×3
    neighbourhood in all channels, (N, n·27), ordered like a Conv3d weight (out, in, kz, ky, kx) flattened over
    (in, kz, ky, kx). Gathered per voxel, so memory grows with the sample, not with the crop."""
    padded = F.pad(x, (1, 1, 1, 1, 1, 1))
    b, z, y, w = voxels.unbind(1)
    cols = [padded[b, :, z + dz, y + dy, w + dx] for dz in range(3) for dy in range(3) for dx in range(3)]
    return torch.stack(cols, dim=2).reshape(len(voxels), -1)  # (N, n, 27) -> (N, n·27)


@torch.no_grad()
def fit_context_filter(conv: torch.nn.Conv3d, batches: Iterable[dict], ridge: float = 1e-3,
                       voxels_per_batch: int = 32768, seed: int = 0) -> float:
    """Set `conv` (n→n channels, 3×3×3, padding 1) to the ridge least-squares map from the filled context to
    y − x̃ over `batches` ({'context' B×T×C×…, 'target' B×C×…}), using at most `voxels_per_batch` random voxels
    of each batch; returns the fraction of the velocity's energy it explains (R² over the sampled voxels)."""
    gen = torch.Generator().manual_seed(seed)
    gram = rhs = None
    energy, count = 0.0, 0
    for batch in batches:
        x0 = fold_slots(batch["context"].double())
        u = fold_slots(broadcast_target(batch["target"].double(), batch["context"].shape[1])) - x0
        n_vox = x0.shape[0] * x0[0, 0].numel()
        flat = torch.randperm(n_vox, generator=gen)[:voxels_per_batch] if n_vox > voxels_per_batch else \
            torch.arange(n_vox)
        voxels = torch.stack(torch.unravel_index(flat, (x0.shape[0], *x0.shape[2:])), dim=1)
        feats = _neighbourhoods(x0, voxels)
        feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], dim=1)
        b, z, y, w = voxels.unbind(1)
        target = u[b, :, z, y, w]
        gram = feats.T @ feats if gram is None else gram + feats.T @ feats
        rhs = feats.T @ target if rhs is None else rhs + feats.T @ target
        energy += float((target ** 2).sum())
        count += len(target)
    if gram is None:
        return 0.0
    reg = ridge * torch.diag(gram).mean() * torch.eye(len(gram), dtype=gram.dtype)
    reg[-1, -1] = 0.0  # the bias is not shrunk
    coef = torch.linalg.solve(gram + reg, rhs)  # (n·27 + 1) × n
    n = conv.out_channels
    conv.weight.copy_(coef[:-1].T.reshape(n, n, 3, 3, 3).to(conv.weight.dtype))
    conv.bias.copy_(coef[-1].to(conv.bias.dtype))
    residual = energy - float((coef * rhs).sum())  # Σ(u − Xc)² = Σu² − cᵀXᵀu at the (unregularised) optimum
    return max(0.0, 1.0 - residual / energy) if energy > 0 else 0.0
