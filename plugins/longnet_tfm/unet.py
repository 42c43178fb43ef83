"""Velocity network of TFM: a compact 3D U-Net conditioned on the flow-matching step t.

All T context slots are folded into the channel axis (input = output = T·C channels). The step t enters
through a sinusoidal embedding (F = base channels, period 10000) and a Linear(F→4F)–SiLU–Linear MLP whose
output is added to every residual block. The output convolution is zero-initialised, so an untrained network
predicts v ≡ 0 and the ODE solution is the filled context itself (the LCI-equivalent starting point).
Optionally the real time gaps between each context slot and the target are embedded the same way and added
to the step embedding (`condition_on_days`; the paper's stated future direction, off by default).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t·ω_k), sin(t·ω_k)], ω_k = exp(−ln P · k/(dim/2)), k < dim/2: (*t.shape, dim)."""
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


@dataclass
class TFMNetConfig:
    """Architecture hyper-parameters; stored in checkpoints so prediction rebuilds the same network."""

    in_channels: int                                 # T·C
    base_channels: int = 32                          # spec: parser default 32 (method default 256)
    channel_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (3,)         # level indices (0 = full resolution) with self-attention
    mid_attention: bool = True
    groups: int = 2                                  # GroupNorm groups (TFM fork: 2)
    downsample: str = "hw"                           # "hw": stride (1,2,2) as the paper; "all": stride 2
    n_slots: int = 1                                 # T (for the optional time-gap conditioning)
    condition_on_days: bool = False
    days_scale: float = 365.0                        # gaps are embedded in units of days / days_scale
    context_residual: bool = False                   # also see x̃; v += linear forecast from x̃ (see TFMUNet;
                                                     # False here for checkpoints made before it existed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"], d["attention_levels"] = list(self.channel_mult), list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TFMNetConfig":
        d = dict(d)
        d["channel_mult"] = tuple(d.get("channel_mult", (1, 1, 2, 4)))
        d["attention_levels"] = tuple(d.get("attention_levels", ()))
        return cls(**d)

    @classmethod
    def tiny(cls, in_channels: int, n_slots: int = 3) -> "TFMNetConfig":
        """The tiny variant: base 8, mult (1,1), attention off."""
        return cls(in_channels, base_channels=8, channel_mult=(1, 1), attention_levels=(), mid_attention=False,
                   n_slots=n_slots)


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(groups, ch)
    return nn.GroupNorm(g, ch)


class ResBlock(nn.Module):
    """GN–SiLU–Conv, + projected step embedding, GN–SiLU–Conv, residual (1×1 conv when widths differ)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin, groups), nn.SiLU(), nn.Conv3d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(_norm(cout, groups), nn.SiLU(), nn.Conv3d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb(emb).to(h.dtype)[:, :, None, None, None]
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all voxels of a (low-resolution) feature map, residual."""

    def __init__(self, ch: int, groups: int, heads: int = 4):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, -1).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # b, heads, n, d
        h = h.transpose(-1, -2).reshape(b, c, -1)
        return x + self.proj(h).reshape(b, c, *spatial)


class TFMUNet(nn.Module):
    """v_θ(t, x): B×(T·C)×Z×Y×X → same shape. Any spatial size: inputs are padded to the network's divisor
    internally (replicate padding) and the output cropped back."""

    def __init__(self, cfg: TFMNetConfig):
        super().__init__()
        self.cfg = cfg
        base, g = cfg.base_channels, cfg.groups
        emb_dim = 4 * base
        self.time_embed = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.condition_on_days:
            # per slot: sinusoid of the gap (F features) + a 'slot present' flag, folded → MLP
            self.days_embed = nn.Sequential(nn.Linear(cfg.n_slots * (base + 1), emb_dim), nn.SiLU(),
                                            nn.Linear(emb_dim, emb_dim))
        self.stride = (1, 2, 2) if cfg.downsample == "hw" else (2, 2, 2)
        self.input_conv = nn.Conv3d(cfg.in_channels * (2 if cfg.context_residual else 1), base, 3, padding=1)
        widths = [base * m for m in cfg.channel_mult]
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        ch = base
        skips = []
        for lvl, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, w, emb_dim, g))
                ch = w
                if lvl in cfg.attention_levels:
                    blocks.append(AttentionBlock(ch, g))
            self.down_blocks.append(blocks)
            skips.append(ch)
            if lvl < len(widths) - 1:
                self.downsamplers.append(nn.Conv3d(ch, ch, 3, stride=self.stride, padding=1))
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, g)]
                                 + ([AttentionBlock(ch, g)] if cfg.mid_attention else [])
                                 + [ResBlock(ch, ch, emb_dim, g)])
        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for lvl in reversed(range(len(widths))):
            w = widths[lvl]
            blocks = nn.ModuleList()
            for i in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch + (skips[lvl] if i == 0 else 0), w, emb_dim, g))
                ch = w
                if lvl in cfg.attention_levels:
                    blocks.append(AttentionBlock(ch, g))
            self.up_blocks.append(blocks)
            if lvl > 0:
                self.upsamplers.append(nn.Conv3d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(_norm(ch, g), nn.SiLU(), nn.Conv3d(ch, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        if cfg.context_residual:
            # v += K∗x̃ + M(emb)·x̃ + b(emb): a linear forecast from the filled context x̃. K is a 3×3×3 filter
            # over all slots (weighting the slots and smoothing away their noise), fitted by least squares before
            # training (`linear_head.fit_context_filter`); M/b are slot weights that depend on the step and, with
            # condition_on_days, on the gaps and which slots are present. Zero-initialised like the output conv,
            # so v ≡ 0 still holds for an unfitted, untrained network.
            n = cfg.in_channels
            self.slot_weights = nn.Linear(emb_dim, n * n + n)
            self.context_filter = nn.Conv3d(n, n, 3, padding=1)
            for layer in (self.slot_weights, self.context_filter):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Spatial multiple every input is padded to (product of the strides)."""
        n = len(self.cfg.channel_mult) - 1
        return tuple(s ** n for s in self.stride)

    def embed(self, t: torch.Tensor, gaps: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(sinusoid(t, self.cfg.base_channels))
        if self.cfg.condition_on_days:
            if gaps is None:
                raise ValueError("this network is conditioned on time gaps: pass gaps (B×T days, NaN = missing)")
            present = torch.isfinite(gaps)
            g = torch.where(present, gaps, torch.zeros_like(gaps)) / self.cfg.days_scale
            e = sinusoid(g, self.cfg.base_channels) * present[..., None]
            e = torch.cat([e, present[..., None].float()], dim=-1).flatten(1)
            emb = emb + self.days_embed(e)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, gaps: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity at state x (B×T·C×…) and step t; `context` = the filled context x̃ (same shape), needed when
        the network was built with `context_residual`."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if self.cfg.context_residual:
            if context is None:
                raise ValueError("this network adds a linear forecast from the context: pass context=x̃")
            x_in = torch.cat([x, context.to(x.dtype)], dim=1)
        else:
            x_in = x
        shape = x.shape[2:]
        pads = []
        for s, d in zip(reversed(shape), reversed(self.divisor)):
            pads += [0, (-s) % d]
        h = F.pad(x_in, pads, mode="replicate") if any(pads) else x_in
        emb = self.embed(t.to(x.device), gaps)
        h = self.input_conv(h)
        skips = []
        for lvl, blocks in enumerate(self.down_blocks):
            for b in blocks:
                h = b(h, emb)
            skips.append(h)
            if lvl < len(self.downsamplers):
                h = self.downsamplers[lvl](h)
        for b in self.mid:
            h = b(h, emb)
        for i, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for b in blocks:
                h = b(h, emb)
            if i < len(self.upsamplers):
                target = skips[-1].shape[2:]
                h = self.upsamplers[i](F.interpolate(h, size=target, mode="nearest"))
        out = self.out(h)[(slice(None), slice(None)) + tuple(slice(0, s) for s in shape)]
        if self.cfg.context_residual:
            out = out + self.linear_forecast(context.float(), emb).to(out.dtype)
        return out

    def linear_forecast(self, context: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        n = self.cfg.in_channels
        coef = self.slot_weights(emb).float()
        weights, bias = coef[:, :n * n].reshape(-1, n, n), coef[:, n * n:]
        mixed = torch.einsum("bij,bj...->bi...", weights, context) + bias.reshape(*bias.shape, 1, 1, 1)
        return mixed + self.context_filter(context)
