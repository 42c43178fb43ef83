"""STAMP network from MONAI blocks: a Siamese 3D ViT encoder, a discrete latent with posterior
and prior, and a cross-attending decoder that reconstructs the masked future scan.

Past scan: every patch visible, CLS += Δt-embedding. Future scan: 75% of patches hidden, CLS without Δt.
The deterministic Siamese-MAE ablation (`config.deterministic`) has no latent: the decoder sees only the past.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding

from longnet_stamp.config import STAMPConfig
from longnet_stamp.losses import straight_through_sample
from longnet_stamp.patching import random_masking, restore_sequence
from longnet_stamp.timeembed import DtBinning, DtEmbedding


def _sincos(grid, dim: int) -> torch.Tensor:
    with warnings.catch_warnings():  # MONAI calls torch.meshgrid without `indexing`
        warnings.simplefilter("ignore", UserWarning)
        return build_sincos_position_embedding(list(grid), dim, 3).data


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class STAMPEncoder(nn.Module):
    """3D ViT: conv patch embedding + fixed sin-cos positions (CLS at position 0 gets none), pre-LN blocks."""

    def __init__(self, cfg: STAMPConfig):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.patch_embed = PatchEmbeddingBlock(cfg.in_channels, cfg.img_size, cfg.patch, cfg.width, cfg.heads,
                                                   proj_type="conv", pos_embed_type="sincos")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, int(cfg.width * cfg.mlp_ratio), cfg.heads, qkv_bias=True,
                             use_flash_attention=True) for _ in range(cfg.depth))
        for blk in self.blocks:  # MONAI always builds this LayerNorm; unused without cross-attention (DDP would fail)
            blk.norm_cross_attn = nn.Identity()
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.blocks.apply(_init_linear)
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.patch_embed.patch_embeddings.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def embed(self, x: torch.Tensor, dt_emb: torch.Tensor | None = None, noise: torch.Tensor | None = None,
              num_visible: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Input sequence of the transformer: [CLS (+Δt) ; patch tokens (+pos), optionally masked]."""
        tokens = self.patch_embed(x)
        mask = ids_restore = None
        if noise is not None:
            tokens, mask, ids_restore = random_masking(tokens, int(num_visible), noise)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        if dt_emb is not None:
            cls = cls + dt_emb[:, None, :].to(cls.dtype)
        return torch.cat([cls, tokens], dim=1), mask, ids_restore

    def forward(self, x: torch.Tensor, dt_emb: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                num_visible: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(tokens B×(1+L')×D after the final norm, mask B×L (1 = hidden) or None, ids_restore or None)."""
        h, mask, ids_restore = self.embed(x, dt_emb, noise, num_visible)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h), mask, ids_restore


class DecoderBlock(nn.Module):
    """MONAI TransformerBlock with cross-attention; the context (past tokens + z) gets its own LayerNorm."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_context = nn.LayerNorm(width, eps=1e-6)
        self.block = TransformerBlock(width, int(width * mlp_ratio), heads, qkv_bias=True,
                                      with_cross_attention=True, use_flash_attention=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.block(x, context=self.norm_context(context))


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class STAMPNet(nn.Module):
    """Encoder + Δt embedders + (posterior, prior) + decoder. `forward` = one pretraining pass on a pair."""

    def __init__(self, cfg: STAMPConfig):
        super().__init__()
        self.cfg = cfg
        self.binning = DtBinning(cfg.dt_min, cfg.dt_max, cfg.dt_bins)
        self.encoder = STAMPEncoder(cfg)
        self.dt_embed = DtEmbedding(cfg.width, cfg.dt_freq, cfg.dt_period)
        self.dec_dt_embed = DtEmbedding(cfg.dec_width, cfg.dt_freq, cfg.dt_period)
        latent = cfg.latent_vars * cfg.latent_classes
        if not cfg.deterministic:
            self.posterior = _mlp(2 * cfg.width, 2 * cfg.width, latent)
            self.prior = _mlp(cfg.width, 2 * cfg.width, latent)
            self.z_proj = nn.Linear(latent, cfg.dec_width)
        self.dec_embed = nn.Linear(cfg.width, cfg.dec_width)      # future (query) tokens
        self.past_proj = nn.Linear(cfg.width, cfg.dec_width)      # past (key/value) tokens
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_width))
        pos = torch.cat([torch.zeros(1, 1, cfg.dec_width), _sincos(cfg.grid, cfg.dec_width)], dim=1)
        self.register_buffer("dec_pos", pos, persistent=False)
        self.dec_blocks = nn.ModuleList(DecoderBlock(cfg.dec_width, cfg.dec_heads, cfg.mlp_ratio)
                                        for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(cfg.dec_width, eps=1e-6)
        self.head = nn.Linear(cfg.dec_width, cfg.patch_dim)
        for name, m in self.named_children():
            if name not in ("encoder", "binning"):
                m.apply(_init_linear)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def stochastic(self) -> bool:
        return not self.cfg.deterministic

    # ------------------------------------------------------------------ pieces
    def encode_past(self, x: torch.Tensor, dt_days: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(past tokens with CLS += Δt-embedding, Δt bins)."""
        bins = self.binning(dt_days)
        h, _, _ = self.encoder(x, self.dt_embed(bins))
        return h, bins

    def latent_logits(self, cls: torch.Tensor, cls_future: torch.Tensor | None = None) -> torch.Tensor:
        """Prior logits p(z | CLS_t) or, with `cls_future`, posterior logits q(z | CLS_t, CLS_t+Δt); B×V×K."""
        cfg = self.cfg
        logits = self.prior(cls) if cls_future is None else self.posterior(torch.cat([cls, cls_future], -1))
        return logits.reshape(-1, cfg.latent_vars, cfg.latent_classes)

    def past_context(self, h_past: torch.Tensor, bins: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Decoder keys/values: [z-token ;] past tokens projected, decoder Δt-embedding on the CLS."""
        kv = self.past_proj(h_past)
        dt = self.dec_dt_embed(bins).to(kv.dtype)
        kv = torch.cat([kv[:, :1] + dt[:, None], kv[:, 1:]], dim=1)
        if z is not None:
            kv = torch.cat([self.z_proj(z.flatten(1).to(kv.dtype))[:, None], kv], dim=1)
        return kv

    def decode(self, h_future: torch.Tensor, ids_restore: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Predicted patches B×L×patch_dim of the full future sequence (CLS dropped)."""
        q = self.dec_embed(h_future)
        full = restore_sequence(q[:, 1:], self.mask_token, ids_restore)
        x = torch.cat([q[:, :1], full], dim=1) + self.dec_pos.to(q.dtype)
        for blk in self.dec_blocks:
            x = blk(x, context)
        return self.head(self.dec_norm(x))[:, 1:]

    # ------------------------------------------------------------------ training pass
    def forward(self, past: torch.Tensor, future: torch.Tensor, dt_days: torch.Tensor,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{'pred' B×L×P, 'mask' B×L, and for STAMP 'post_logits', 'prior_logits'} for pairs (past, future)."""
        cfg = self.cfg
        if noise is None:
            noise = torch.rand(past.shape[0], cfg.num_patches, device=past.device)
        h_past, bins = self.encode_past(past, dt_days)
        h_fut, mask, ids_restore = self.encoder(future, None, noise, cfg.num_visible)
        out = {"mask": mask}
        z = None
        if self.stochastic:
            post = self.latent_logits(h_past[:, 0], h_fut[:, 0])
            prior = self.latent_logits(h_past[:, 0])
            z = straight_through_sample(post)
            out.update(post_logits=post, prior_logits=prior)
        out["pred"] = self.decode(h_fut, ids_restore, self.past_context(h_past, bins, z))
        return out

    # ------------------------------------------------------------------ downstream
    def probe_tokens(self, x: torch.Tensor, dt_days: torch.Tensor, num_samples: int = 1,
                     use_latent: bool = True) -> list[torch.Tensor]:
        """Token sequences for the probe from ONE scan (no future image is needed or accepted).

        Stochastic mode: `num_samples` sequences [z_proj(z) ; past_proj(h_t)], each with its own z drawn from
        the prior p(z | CLS_t + Δt-embedding of the horizon); deterministic mode (or `use_latent=False`):
        [h_t], the encoder tokens (encoder width).
        """
        h, _ = self.encode_past(x, dt_days)
        return self.tokens_from_encoded(h, num_samples, use_latent)

    def tokens_from_encoded(self, h: torch.Tensor, num_samples: int = 1, use_latent: bool = True
                            ) -> list[torch.Tensor]:
        """`probe_tokens` from already encoded past tokens h_t (a frozen encoder's output can be cached)."""
        if not (self.stochastic and use_latent):
            return [h]
        prior = self.latent_logits(h[:, 0])
        past = self.past_proj(h)
        out = []
        for _ in range(max(1, int(num_samples))):
            z = straight_through_sample(prior)
            out.append(torch.cat([self.z_proj(z.flatten(1).to(h.dtype))[:, None], past], dim=1))
        return out

    def probe_width(self, use_latent: bool = True) -> int:
        return self.cfg.dec_width if self.stochastic and use_latent else self.cfg.width
