"""LEARNER networks and their configuration: the encoder (TSM ResNet-18 or a 3D ResNet-18), the stage-1 model
(encoder + health-score regressor + optional projector) and the stage-2 change classifier on d_t = u_{t+1} − u_t.

`EncoderConfig` is plain data stored with every checkpoint, so the change trainer and `longnet_predict`
rebuild exactly the encoder a pretraining run produced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from longnet.api import LongnetError, OptionRange, POSITIVE_INT, VolumeInput, option, resize_volume

from longnet_learner.tsm import ResNet3DEncoder, TSMResNet

PRESETS: dict[str, dict[str, Any]] = {
    # paper: TSM-ResNet-18 on 16 frames of 224² (LUS clips)
    "paper": {"backbone": "tsm", "frames": 16, "image_size": 224, "widths": (64, 128, 256, 512),
              "small_stem": False, "batch_size": 16},
    # tiny variant: T=4 frames, 32², widths (8,16,32,64), batch 4
    "tiny": {"backbone": "tsm", "frames": 4, "image_size": 32, "widths": (8, 16, 32, 64), "small_stem": True,
             "batch_size": 4},
}


@dataclass(frozen=True)
class EncoderOptions:
    """Encoder options of the pretraining trainer (the change trainer reads them from --encoder); None = the
    preset's value."""

    preset: str = option("paper", "paper: TSM-ResNet-18, 16 frames of 224², batch 16; tiny: 4 frames of 32², widths "
                                  "8-64, batch 4 (the options below override single values)",
                         choices=tuple(sorted(PRESETS)))
    backbone: str | None = option(None, "tsm: slices as frames through a TSM ResNet-18; resnet3d: MONAI's 3D "
                                        "ResNet-18 on the volume resized to frames×size×size (a deviation from the "
                                        "paper)", choices=("tsm", "resnet3d"))
    frames: int | None = option(None, "number of frames T (evenly spaced slices)", range=POSITIVE_INT)
    image_size: int | None = option(None, "frame size (square, at least 8)", range=OptionRange(int, 8))
    widths: list | None = option(None, "ResNet stage widths", nargs=4, kind=int, range=POSITIVE_INT)
    slice_axis: int = option(0, "spatial axis of the preprocessed volume used as time", choices=(0, 1, 2))


@dataclass(frozen=True)
class EncoderConfig:
    """What builds a LEARNER encoder and its inputs."""

    backbone: str
    frames: int
    image_size: int
    widths: tuple[int, ...]
    small_stem: bool
    slice_axis: int = 0

    @classmethod
    def from_options(cls, options: EncoderOptions) -> "EncoderConfig":
        preset = PRESETS[options.preset]
        pick = lambda k: getattr(options, k) if getattr(options, k) is not None else preset[k]  # noqa: E731
        cfg = cls(backbone=pick("backbone"), frames=int(pick("frames")), image_size=int(pick("image_size")),
                  widths=tuple(int(w) for w in pick("widths")), small_stem=bool(preset["small_stem"]),
                  slice_axis=options.slice_axis)
        if cfg.frames < 1 or cfg.image_size < 8 or len(cfg.widths) != 4 or min(cfg.widths) < 1:
            raise LongnetError(f"invalid LEARNER encoder configuration {cfg}")
        return cfg

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        d = dict(d)
        d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    def input_spec(self):
        """Picklable input preparation for this encoder (frames for TSM, a resized volume for 3D)."""
        if self.backbone == "tsm":
            return FrameInput(self.frames, self.image_size, self.slice_axis)
        return VolumeInput((self.frames, self.image_size, self.image_size))


@dataclass(frozen=True)
class FrameInput:
    """C×Z×Y×X volume → T×C×S×S clip: T slices along `axis` at the centres of T equal bins (the outermost,
    mostly empty slices are avoided), each resized to S×S (bilinear)."""

    frames: int
    size: int
    axis: int = 0

    def __call__(self, data: np.ndarray) -> np.ndarray:
        data = np.moveaxis(np.asarray(data, np.float32), self.axis + 1, 1)  # C×T'×H×W
        n = data.shape[1]
        idx = np.minimum(((np.arange(self.frames) + 0.5) * n / self.frames).astype(int), n - 1)
        clip = resize_volume(data[:, idx].reshape(-1, *data.shape[2:]), (self.size, self.size))
        return np.ascontiguousarray(clip.reshape(data.shape[0], self.frames, self.size, self.size)
                                    .transpose(1, 0, 2, 3))


def build_encoder(cfg: EncoderConfig, in_channels: int) -> nn.Module:
    if cfg.backbone == "tsm":
        return TSMResNet(in_channels, cfg.frames, cfg.widths, small_stem=cfg.small_stem)
    if cfg.backbone == "resnet3d":
        return ResNet3DEncoder(in_channels, cfg.widths, small_stem=cfg.small_stem)
    raise LongnetError(f"unknown LEARNER backbone {cfg.backbone!r}")


class LEARNERNet(nn.Module):
    """Stage 1: u = encoder(x); ĤS = Linear(u); contrastive features = u, or projector(u) when enabled."""

    def __init__(self, encoder: nn.Module, projector_dim: int = 0):
        super().__init__()
        dim = encoder.out_dim
        self.encoder = encoder
        self.regressor = nn.Linear(dim, 1)
        self.projector = (nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projector_dim))
                          if projector_dim else None)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, predicted z-scored health score, features for the contrastive term)."""
        u = self.encoder(x)
        return u, self.regressor(u).squeeze(1), (self.projector(u) if self.projector is not None else u)


class ChangeNet(nn.Module):
    """Stage 2: logits over (improve, stable, worsen) = MLP(d_t), d_t = encoder(x_{t+1}) − encoder(x_t)."""

    def __init__(self, encoder: nn.Module, hidden: int = 128, n_classes: int = 3):
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Sequential(nn.Linear(encoder.out_dim, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def difference(self, x_t: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        return self.encoder(x_next) - self.encoder(x_t)

    def classify(self, d: torch.Tensor) -> torch.Tensor:
        return self.classifier(d)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """forward(d_t) on cached differences, or forward(x_t, x_next) on two batches of scans."""
        if len(inputs) == 1:
            return self.classify(inputs[0])
        x_t, x_next = inputs
        return self.classify(self.difference(x_t, x_next))
