"""Patchify/unpatchify (row-major grid tokens, voxels flattened as (p1, p2, p3, C)) and MAE random masking."""
from __future__ import annotations

from typing import Sequence

import torch


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """B×C×Z×Y×X → B×L×(p1·p2·p3·C), tokens in row-major (z, y, x) grid order."""
    b, c, z, y, w = x.shape
    p1, p2, p3 = (int(p) for p in patch)
    gz, gy, gx = z // p1, y // p2, w // p3
    if gz * p1 != z or gy * p2 != y or gx * p3 != w:
        raise ValueError(f"volume {tuple(x.shape[2:])} is not a multiple of the patch {tuple(patch)}")
    x = x.reshape(b, c, gz, p1, gy, p2, gx, p3).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, gz * gy * gx, p1 * p2 * p3 * c)


def unpatchify(tokens: torch.Tensor, patch: Sequence[int], grid: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of `patchify`: B×L×(p1·p2·p3·C) → B×C×Z×Y×X."""
    b = tokens.shape[0]
    p1, p2, p3 = (int(p) for p in patch)
    gz, gy, gx = (int(g) for g in grid)
    x = tokens.reshape(b, gz, gy, gx, p1, p2, p3, channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, channels, gz * p1, gy * p2, gx * p3)


def random_masking(tokens: torch.Tensor, num_visible: int, noise: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the `num_visible` tokens with the smallest noise (per-sample argsort, as MAE).

    Returns (visible tokens B×V×D, mask B×L with 1 = hidden, ids_restore B×L to undo the shuffle).
    """
    b, length, d = tokens.shape
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    keep = ids_shuffle[:, :num_visible]
    visible = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, d))
    mask = torch.ones(b, length, device=tokens.device, dtype=tokens.dtype)
    mask[:, :num_visible] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


def restore_sequence(visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Full-length sequence: visible tokens back in place, `mask_token` (1×1×D) everywhere else."""
    b, v, d = visible.shape
    length = ids_restore.shape[1]
    filler = mask_token.to(visible.dtype).expand(b, length - v, d)
    full = torch.cat([visible, filler], dim=1)
    return torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, d))
