"""The flow-matching objective of TFM on folded slot tensors.

x_0 = filled context x̃ (B×T×C×…), x_1 = target y broadcast to every slot, t ~ U(0, 1) per sample,
x_t = t·x_1 + (1 − t)·x_0 + σ·ε and u_t = x_1 − x_0 ("difference modelling"). Plain conditional FM keeps
each context paired with its own target; exact-OT re-pairing across the batch (the official code's default)
is available as an option because with equal batch halves the exact minibatch OT plan is a permutation,
found exactly and cheaply by the Hungarian algorithm.
"""
from __future__ import annotations

import numpy as np
import torch


def fold_slots(x: torch.Tensor) -> torch.Tensor:
    """B×T×C×Z×Y×X → B×(T·C)×Z×Y×X (the network's layout)."""
    b, t, c, *spatial = x.shape
    return x.reshape(b, t * c, *spatial)


def unfold_slots(x: torch.Tensor, n_slots: int) -> torch.Tensor:
    """B×(T·C)×Z×Y×X → B×T×C×Z×Y×X."""
    b, tc, *spatial = x.shape
    return x.reshape(b, n_slots, tc // n_slots, *spatial)


def broadcast_target(target: torch.Tensor, n_slots: int) -> torch.Tensor:
    """y (B×C×… or B×1×C×…) repeated into every slot: B×T×C×…."""
    if target.ndim == 5:
        target = target[:, None]
    return target.expand(target.shape[0], n_slots, *target.shape[2:])


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma: float,
                eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, u_t) of conditional FM with a constant-σ Gaussian path; t has one entry per sample."""
    tb = t.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    xt = tb * x1 + (1 - tb) * x0
    if sigma:
        xt = xt + sigma * (torch.randn_like(x0) if eps is None else eps)
    return xt, x1 - x0


def exact_ot_permutation(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Indices j(i) such that (x0[i], x1[j(i)]) is the exact OT plan between the two minibatches (squared
    Euclidean cost). With uniform weights and equal sizes the optimal plan is a permutation (Birkhoff), so
    the linear assignment is exact. NB: this may pair a context with another subject's target."""
    from scipy.optimize import linear_sum_assignment

    a, b = x0.detach().flatten(1).float(), x1.detach().flatten(1).float()
    cost = torch.cdist(a, b).pow(2).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm).to(x1.device)


def reduce_slots(x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Temporal reduction of the integrated slots B×T×C×… → B×C×…: `mean` (default) or `last`."""
    if reduction == "mean":
        return x.mean(dim=1)
    if reduction == "last":
        return x[:, -1]
    raise ValueError(f"unknown temporal reduction {reduction!r} (mean or last)")
