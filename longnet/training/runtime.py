"""Device, seeding, mixed precision and torch.compile decisions for the training loop."""
from __future__ import annotations

import contextlib
import os
import random
import warnings

import numpy as np
import torch

from longnet.errors import LongnetError

_FALSE = {"0", "f", "false", "no", "off"}
_TRUE = {"1", "t", "true", "yes", "on"}


def resolve_device(name: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' (default: CUDA when available); DDP ranks use their local GPU."""
    if isinstance(name, torch.device):
        return name
    name = (name or ("cuda" if torch.cuda.is_available() else "cpu")).lower()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LongnetError("-device cuda was requested but no CUDA GPU is available (use -device cpu)")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise LongnetError("-device mps was requested but MPS is not available")
        return torch.device("mps")
    if name != "cpu":
        raise LongnetError(f"unknown device {name!r} (use cpu, cuda or mps)")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices): same seed + CPU gives the same loss curve."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def configure_backends(device: torch.device, deterministic: bool) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def resolve_amp(device: torch.device, requested: str | None) -> torch.dtype | None:
    """Autocast dtype: fp16 (default on CUDA), bf16 on request, None (fp32) on CPU/MPS or with 'off'."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "fp16", "bf16", "off"):
        raise LongnetError(f"--amp must be auto, fp16, bf16 or off, got {requested!r}")
    if requested == "off" or device.type != "cuda":
        if requested in ("fp16", "bf16") and device.type != "cuda":
            warnings.warn(f"--amp {requested} ignored on {device.type}: training in fp32")
        return None
    return torch.bfloat16 if requested == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None):
    """GradScaler only for fp16 (bf16 has fp32's range and needs none)."""
    if dtype == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


def compile_wanted(device: torch.device) -> bool:
    """torch.compile on CUDA by default; LONGNET_COMPILE=0 disables, =1 forces it (also on CPU)."""
    value = os.environ.get("LONGNET_COMPILE", os.environ.get("nnUNet_compile", "")).strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    return device.type == "cuda"
