"""SimSiam projector and predictor MLPs, one pair per tapped U-Net layer.

They act on feature *vectors* sampled at voxel positions, so BatchNorm1d normalises over batch × patches.
"""
from __future__ import annotations

import torch.nn as nn


class Projector(nn.Sequential):
    """f: 3 × [Linear(no bias) → BN → ReLU], the last BN without affine and without ReLU."""

    def __init__(self, in_features: int, width: int):
        super().__init__(
            nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width, affine=False),
        )


class Predictor(nn.Sequential):
    """p: Linear(W → H, no bias) → BN → ReLU → Linear(H → W) (bottleneck H = W/4 in the official code)."""

    def __init__(self, width: int, hidden: int):
        super().__init__(
            nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, width),
        )


class LayerHead(nn.Module):
    """Projector + predictor of one tapped layer (the predictor is unused for layers with zero sim weight)."""

    def __init__(self, in_features: int, width: int, hidden: int, with_predictor: bool = True):
        super().__init__()
        self.projector = Projector(in_features, width)
        self.predictor = Predictor(width, hidden) if with_predictor else None
