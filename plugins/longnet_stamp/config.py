"""STAMP network sizes: presets (tiny/small/base), per-field overrides and the ViT patch derived from the plan.

Kept as plain data so the exact configuration travels in every checkpoint (`extra["stamp_config"]`) and a probe or
a prediction rebuilds the same network without the command line of the pretraining run.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

from longnet.api import POSITIVE_INT, LongnetError, OptionRange, option

#: "base" is the paper's ViT-B, "tiny" the spec's test configuration, "small" a CPU demo size.
PRESETS: dict[str, dict] = {
    "tiny": dict(width=48, depth=2, heads=4, dec_width=24, dec_depth=1, dec_heads=4, latent_vars=4,
                 latent_classes=4, dt_bins=4),
    "small": dict(width=96, depth=4, heads=4, dec_width=48, dec_depth=2, dec_heads=4, latent_vars=8,
                  latent_classes=8, dt_bins=8),
    "base": dict(width=768, depth=12, heads=12, dec_width=384, dec_depth=8, dec_heads=16, latent_vars=32,
                 latent_classes=32, dt_bins=16),
}
OVERRIDABLE = ("width", "depth", "heads", "dec_width", "dec_depth", "dec_heads", "latent_vars", "latent_classes",
               "dt_bins")


@dataclass(frozen=True)
class STAMPConfig:
    """Everything that fixes the network's shapes, plus the Δt window used for binning."""

    in_channels: int
    img_size: tuple[int, int, int]
    patch: tuple[int, int, int]
    width: int = 768
    depth: int = 12
    heads: int = 12
    dec_width: int = 384
    dec_depth: int = 8
    dec_heads: int = 16
    latent_vars: int = 32
    latent_classes: int = 32
    dt_bins: int = 16
    dt_min: float = 90.0
    dt_max: float = 540.0
    dt_freq: int = 64
    dt_period: float = 160.0
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    deterministic: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(s) for s in self.img_size))
        object.__setattr__(self, "patch", tuple(int(s) for s in self.patch))
        problems = []
        for name, width, heads in (("width", self.width, self.heads), ("dec_width", self.dec_width, self.dec_heads)):
            if width % 6:
                problems.append(f"{name} {width} must be divisible by 6 (3D sin-cos position embedding)")
            if width % heads:
                problems.append(f"{name} {width} must be divisible by its number of heads {heads}")
        if any(s % p or s < p for s, p in zip(self.img_size, self.patch)):
            problems.append(f"input size {list(self.img_size)} must be a multiple of the ViT patch {list(self.patch)}")
        if not 0.0 <= self.mask_ratio < 1.0:
            problems.append(f"mask ratio {self.mask_ratio} must be in [0, 1)")
        if self.dt_bins < 1 or not self.dt_max >= self.dt_min:
            problems.append(f"need dt_bins >= 1 and dt_max >= dt_min (got {self.dt_bins}, {self.dt_min}, "
                            f"{self.dt_max})")
        if problems:
            raise LongnetError("invalid STAMP configuration: " + "; ".join(problems))

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(s // p for s, p in zip(self.img_size, self.patch))

    @property
    def num_patches(self) -> int:
        return int(math.prod(self.grid))

    @property
    def patch_dim(self) -> int:
        return int(math.prod(self.patch)) * self.in_channels

    @property
    def num_visible(self) -> int:
        """Visible future patches: floor((1 - mask_ratio) * L), at least one."""
        return max(1, int(self.num_patches * (1.0 - self.mask_ratio)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"], d["patch"] = list(self.img_size), list(self.patch)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "STAMPConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_(self, **changes) -> "STAMPConfig":
        return replace(self, **changes)


def derive_vit_patch(plan_patch: Sequence[int]) -> tuple[int, ...]:
    """Per axis the largest power of two <= 16 leaving at least 4 tokens (128 -> 16, 32/40 -> 8, 16 -> 4)."""
    out = []
    for s in plan_patch:
        p = 2 ** int(math.floor(math.log2(max(1, int(s) // 4)))) if int(s) >= 4 else 1
        out.append(int(max(1, min(16, p))))
    return tuple(out)


def input_size(plan_patch: Sequence[int], vit_patch: Sequence[int]) -> tuple[int, ...]:
    """The crop the ViT sees: the plan's patch rounded down to a multiple of the ViT patch (>= one patch)."""
    return tuple(max(p, (int(s) // p) * p) for s, p in zip(plan_patch, vit_patch))


@dataclass(frozen=True)
class ArchitectureOptions:
    """Network-size options shared by the pretrainer and a probe with --random-encoder (None = the preset's)."""

    preset: str = option("base", "network size preset (base = ViT-B as in the paper; tiny/small for CPU)",
                         choices=tuple(sorted(PRESETS)))
    vit_patch: list | None = option(None, "ViT patch size, 1 or 3 ints (None: derived from the plan's patch size)",
                                    nargs="+", kind=int, range=POSITIVE_INT)
    width: int | None = option(None, "override the preset's encoder width", range=POSITIVE_INT)
    depth: int | None = option(None, "override the preset's encoder depth", range=POSITIVE_INT)
    heads: int | None = option(None, "override the preset's encoder heads", range=POSITIVE_INT)
    dec_width: int | None = option(None, "override the preset's decoder width", range=POSITIVE_INT)
    dec_depth: int | None = option(None, "override the preset's decoder depth", range=POSITIVE_INT)
    dec_heads: int | None = option(None, "override the preset's decoder heads", range=POSITIVE_INT)
    latent_vars: int | None = option(None, "override the preset's number of latent variables", range=POSITIVE_INT)
    latent_classes: int | None = option(None, "override the preset's classes per latent variable", range=POSITIVE_INT)
    dt_bins: int | None = option(None, "override the preset's number of Δt bins", range=POSITIVE_INT)
    deterministic_mae: bool = option(False, "deterministic Siamese-MAE ablation: no latent, no KL (same "
                                            "encoder/decoder)", flag=("--deterministic-mae", "--siamese-mae"))
    mask_ratio: float = option(0.75, "fraction of future patches hidden", range=OptionRange(float, 0, maximum=0.99))


def config_from_options(options: ArchitectureOptions, in_channels: int, plan_patch: Sequence[int], dt_min: float,
                        dt_max: float) -> STAMPConfig:
    """STAMPConfig from a trainer's options and the plan's patch size."""
    sizes = dict(PRESETS[options.preset])
    for name in OVERRIDABLE:
        if getattr(options, name) is not None:
            sizes[name] = int(getattr(options, name))
    vp = options.vit_patch
    if vp:
        vp = list(vp) * 3 if len(vp) == 1 else list(vp)
        if len(vp) != len(plan_patch):
            raise LongnetError(f"--vit-patch needs 1 or {len(plan_patch)} values, got {vp}")
    else:
        vp = derive_vit_patch(plan_patch)
    if len(plan_patch) != 3:
        raise LongnetError(f"STAMP needs a 3D configuration (patch {list(plan_patch)}); use 3d_fullres")
    return STAMPConfig(in_channels=int(in_channels), img_size=input_size(plan_patch, vp), patch=tuple(vp),
                       dt_min=float(dt_min), dt_max=float(dt_max),
                       mask_ratio=options.mask_ratio, deterministic=options.deterministic_mae, **sizes)
