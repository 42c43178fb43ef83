"""The module LongRepPretrainer trains: the planned U-Net, its feature taps, per-layer SimSiam heads and the
denoising reconstruction head, with the whole pretraining loss computed in `forward` (so DDP and
torch.compile see one module).

The U-Net's own submodules (`encoder`, `decoder`) are registered at the top level, so the state dict uses
exactly the segmentation network's parameter names; the heads live under `longrep_heads.*` and
`longrep_recon.*`, which `--pretrained-weights` reports as unused and ignores downstream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet_longrep.heads import LayerHead
from longnet_longrep.losses import (covariance_loss, orthogonality_loss, symmetric_similarity, variance_loss)
from longnet_longrep.taps import FeatureTaps, Tap, find_taps

HEAD_PREFIXES = ("longrep_heads.", "longrep_recon.")  # ignored when loaded into a segmentation network


@dataclass(frozen=True)
class LossWeights:
    """L_PT = λ L_sim + α L_rec + μ L_S + γ L_C + β L_O (paper defaults; μ, γ also scaled by w_l per layer)."""

    sim: float = 1.0
    rec: float = 10.0
    var: float = 1e-2
    cov: float = 1e-3
    orth: float = 100.0


class LongRepPretrainModel(nn.Module):
    """U-Net + taps + heads; `forward(x_a, x_b, clean_a, clean_b)` returns the loss terms of one batch of pairs."""

    def __init__(self, unet: nn.Module, in_channels: int, num_classes: int, proj_width: int = 2048,
                 pred_width: int = 512, num_patches: int = 128, weights: LossWeights = LossWeights()):
        super().__init__()
        for name, child in unet.named_children():
            self.add_module(name, child)  # same parameter names as the segmentation network
        self.__dict__["_unet"] = unet     # not registered twice: its children above are the same objects
        self.weights = weights
        self.taps: list[Tap] = find_taps(unet)
        self.feature_taps = FeatureTaps(unet, self.taps, num_patches)
        self.longrep_heads = nn.ModuleDict({t.name: LayerHead(t.channels, proj_width, pred_width, t.similarity)
                                            for t in self.taps})
        conv_op = type(next(m for m in unet.modules() if isinstance(m, nn.modules.conv._ConvNd)))
        self.longrep_recon = conv_op(num_classes, in_channels, 3, padding=1)
        n_sim = sum(t.similarity for t in self.taps)
        self.layer_weight = 1.0 / max(n_sim, 1)
        self._orth_pair = (next(t.name for t in self.taps if t.role == "encoder_last"),
                           next(t.name for t in self.taps if t.role == "decoder"))

    def unet_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._unet(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, clean_a: torch.Tensor,
                clean_b: torch.Tensor) -> dict[str, torch.Tensor]:
        self.feature_taps.start()
        try:
            logits = self.unet_forward(torch.cat([x_a, x_b]))
        finally:
            feats = self.feature_taps.stop()
        rec = F.mse_loss(self.longrep_recon(logits).float(), torch.cat([clean_a, clean_b]).float())
        z: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        sim = var = cov = logits.new_zeros((), dtype=torch.float32)
        for tap in self.taps:
            v = feats[tap.name]                                   # 2B × m × C
            head = self.longrep_heads[tap.name]
            # both visits go through the heads as one BatchNorm batch (as the official code), then split
            zz = head.projector(v.reshape(-1, v.shape[-1]))
            half = zz.shape[0] // 2
            za, zb = zz[:half], zz[half:]
            z[tap.name] = (za, zb)
            if tap.similarity:
                pp = head.predictor(zz)
                sim = sim + self.layer_weight * symmetric_similarity(pp[:half], za, pp[half:], zb)
            if tap.regularised:
                var = var + self.layer_weight * 0.5 * (variance_loss(za) + variance_loss(zb))
                cov = cov + self.layer_weight * (covariance_loss(za) + covariance_loss(zb))
        enc, dec = self._orth_pair
        orth = 0.5 * (orthogonality_loss(z[enc][0], z[dec][0]) + orthogonality_loss(z[enc][1], z[dec][1]))
        w = self.weights
        loss = w.sim * sim + w.rec * rec + w.var * var + w.cov * cov + w.orth * orth
        return {"loss": loss, "sim": sim.detach(), "rec": rec.detach(), "var": var.detach(), "cov": cov.detach(),
                "orth": orth.detach()}

