"""STAMP's objective: masked-patch MSE + 0.01 · max(balanced KL, free bits).

Discrete latents are `V` categorical variables with `K` classes each (logits B×V×K). KL(q‖p) is summed over
the variables and averaged over the batch (DreamerV2's independent one-hot categoricals).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False) -> torch.Tensor:
    """Mean over hidden patches (mask = 1) of the per-patch MSE; visible patches do not contribute at all."""
    target = target.float()
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


def categorical_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """KL(q‖p) per sample (B), summed over the latent variables; ≥ 0, exactly 0 for equal logits."""
    log_q = F.log_softmax(q_logits.float(), dim=-1)
    log_p = F.log_softmax(p_logits.float(), dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=(-1, -2))


def balanced_kl_terms(q_logits: torch.Tensor, p_logits: torch.Tensor, beta: float = 0.2
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(β·KL(q‖sg p), (1−β)·KL(sg q‖p)), batch means: the first trains only the posterior, the second only
    the prior (stop-gradients as in DreamerV2's KL balancing)."""
    post = beta * categorical_kl(q_logits, p_logits.detach()).mean()
    prior = (1.0 - beta) * categorical_kl(q_logits.detach(), p_logits).mean()
    return post, prior


def kl_loss(q_logits: torch.Tensor, p_logits: torch.Tensor, beta: float = 0.2, free_bits: float = 0.1
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_KL = max(K, free_bits), K) with K the balanced KL; below the floor the KL gets no gradient."""
    post, prior = balanced_kl_terms(q_logits, p_logits, beta)
    k = post + prior
    return torch.clamp(k, min=free_bits), k


def straight_through_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-hot sample per latent variable; forward value exactly one-hot, gradient that of the probabilities."""
    probs = F.softmax(logits.float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    idx = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    onehot = F.one_hot(idx, probs.shape[-1]).to(probs.dtype)
    return onehot + (probs - probs.detach())  # the bracket is exactly 0, so the value is exactly one-hot


def stamp_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, q_logits: torch.Tensor | None,
               p_logits: torch.Tensor | None, beta: float = 0.2, free_bits: float = 0.1, kl_scale: float = 0.01,
               norm_pix: bool = False) -> dict[str, torch.Tensor]:
    """{'loss', 'rec', 'kl' (floored), 'kl_raw'}; without logits (deterministic Siamese-MAE) loss = rec."""
    rec = masked_mse(pred, target, mask, norm_pix)
    if q_logits is None or p_logits is None:
        return {"loss": rec, "rec": rec}
    kl, raw = kl_loss(q_logits, p_logits, beta, free_bits)
    return {"loss": rec + kl_scale * kl, "rec": rec, "kl": kl, "kl_raw": raw}
