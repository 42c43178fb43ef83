"""Feature taps on a planned U-Net (dynamic-network-architectures) by forward hooks.

The paper taps raw (pre-norm) conv outputs of its fixed 5-level U-Net: the first conv of every encoder
level, the first conv of the bottleneck, the first conv of every decoder level except the full-resolution
one, plus the second conv of the last encoder level before the bottleneck (orthogonality only). The same
rule is applied to any PlainConvUNet / ResidualEncoderUNet a plan describes, stage by stage, so a plan with
more or fewer stages gets the taps at the matching resolutions:

- `enc{s}`: first conv of encoder stage s, s = 0 … n−2 (downsampling = cumulative stride of stage s);
- `bottleneck`: first conv of encoder stage n−1;
- `enc{n−2}_last`: last conv of encoder stage n−2 (similarity weight 0, used for L_O);
- `dec{t}`: first conv of decoder stage t = 0 … n−3 (resolution of encoder stage n−2−t; with only two
  stages the single, full-resolution decoder stage is tapped instead).

Each hook gathers the SAME random voxel positions for every item of the batch (both visits of a pair are
forwarded as one batch), so only B × M feature vectors per layer are kept, never whole maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from longnet.api import LongnetError


@dataclass(frozen=True)
class Tap:
    """One tapped conv: where it is, what it sees and how the losses use it."""

    name: str
    module_name: str
    role: str                       # "encoder" | "bottleneck" | "encoder_last" | "decoder"
    stage: int                      # encoder stage whose resolution the output has
    channels: int
    downsampling: tuple[int, ...]   # cumulative stride relative to the input patch
    similarity: bool                # contributes to L_sim (weight 1 / #similarity taps)
    regularised: bool               # L_S and L_C apply (decoder taps)
    index_group: str                # taps of one group share the sampled voxel positions


def _convs(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Forward convs of a stage in registration order, without residual shortcut projections."""
    out = []
    for name, m in module.named_modules(prefix=prefix):
        if isinstance(m, _ConvNd) and not isinstance(m, _ConvTransposeNd) and ".skip" not in f".{name}":
            out.append((name, m))
    return out


def _strides(encoder: nn.Module, n_stages: int, ndim: int) -> list[tuple[int, ...]]:
    strides = getattr(encoder, "strides", None)
    if strides is None or len(strides) != n_stages:
        raise LongnetError("LongRep needs the encoder's strides (a dynamic-network-architectures U-Net)")
    cum, out = np.ones(ndim, dtype=int), []
    for s in strides:
        s = np.asarray([s] * ndim if np.isscalar(s) else s, dtype=int)
        cum = cum * s
        out.append(tuple(int(x) for x in cum))
    return out


def find_taps(unet: nn.Module) -> list[Tap]:
    """The tapped layers of a PlainConvUNet / ResidualEncoderUNet (any number of stages, 2D or 3D)."""
    encoder, decoder = getattr(unet, "encoder", None), getattr(unet, "decoder", None)
    enc_stages = getattr(encoder, "stages", None)
    dec_stages = getattr(decoder, "stages", None)
    if enc_stages is None or dec_stages is None:
        raise LongnetError(f"LongRep taps U-Nets from dynamic-network-architectures (encoder.stages / "
                           f"decoder.stages); {type(unet).__name__} has no such stages")
    n = len(enc_stages)
    if n < 2 or len(dec_stages) != n - 1:
        raise LongnetError(f"LongRep needs a U-Net with >= 2 stages and n-1 decoder stages "
                           f"(got {n} encoder / {len(dec_stages)} decoder stages)")
    enc_convs = [_convs(enc_stages[s], f"encoder.stages.{s}") for s in range(n)]
    dec_convs = [_convs(dec_stages[t], f"decoder.stages.{t}") for t in range(n - 1)]
    if any(not c for c in enc_convs + dec_convs):
        raise LongnetError("LongRep found a U-Net stage without a convolution to tap")
    ndim = enc_convs[0][0][1].weight.ndim - 2
    down = _strides(encoder, n, ndim)
    taps: list[Tap] = []
    for s in range(n - 1):
        name, conv = enc_convs[s][0]
        taps.append(Tap(f"enc{s}", name, "encoder", s, conv.out_channels, down[s], True, False, f"enc{s}"))
    name, conv = enc_convs[n - 1][0]
    taps.append(Tap("bottleneck", name, "bottleneck", n - 1, conv.out_channels, down[n - 1], True, False,
                    "bottleneck"))
    name, conv = enc_convs[n - 2][-1]
    taps.append(Tap(f"enc{n - 2}_last", name, "encoder_last", n - 2, conv.out_channels, down[n - 2], False, False,
                    "dec0"))
    for t in range(max(1, n - 2)):
        name, conv = dec_convs[t][0]
        stage = n - 2 - t
        taps.append(Tap(f"dec{t}", name, "decoder", stage, conv.out_channels, down[stage], True, True, f"dec{t}"))
    return taps


class FeatureTaps:
    """Forward hooks that, while `active`, gather M random voxel positions of each tapped conv's output.

    Positions are drawn once per forward and index group (torch's global RNG, so seeded runs and resumes
    repeat them) and shared by every batch item. `features[name]` is N × m × C (m = min(M, #voxels)).
    """

    def __init__(self, unet: nn.Module, taps: list[Tap], num_patches: int):
        self.taps = list(taps)
        self.num_patches = int(num_patches)
        self.active = False
        self.features: dict[str, torch.Tensor] = {}
        self._indices: dict[str, torch.Tensor] = {}
        modules = dict(unet.named_modules())
        self._handles = [modules[t.module_name].register_forward_hook(self._hook(t)) for t in self.taps]

    def _hook(self, tap: Tap) -> Callable:
        def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            if not self.active:
                return
            flat = output.flatten(2)
            idx = self._indices.get(tap.index_group)
            if idx is None:
                n_vox = flat.shape[-1]
                idx = torch.randperm(n_vox, device=flat.device)[: self.num_patches]
                self._indices[tap.index_group] = idx
            self.features[tap.name] = flat.index_select(2, idx).transpose(1, 2)

        return hook

    def start(self) -> None:
        """Begin collecting for one forward pass (fresh positions)."""
        self.features, self._indices, self.active = {}, {}, True

    def stop(self) -> dict[str, torch.Tensor]:
        self.active = False
        feats, self.features, self._indices = self.features, {}, {}
        return feats

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
