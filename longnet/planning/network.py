"""Build the network a plan describes. Class names in plans resolve only inside an allow-list of modules."""
from __future__ import annotations

import importlib

import torch.nn as nn

from longnet.errors import LongnetError

ALLOWED_MODULE_PREFIXES = ("torch.nn.", "dynamic_network_architectures.")


def resolve_class(dotted: str):
    """Import `pkg.module.Class` only if it lives in an allowed module (plans files are data, not code)."""
    if dotted is None:
        return None
    if not isinstance(dotted, str) or "." not in dotted:
        raise LongnetError(f"invalid class reference {dotted!r} in plans")
    if not dotted.startswith(ALLOWED_MODULE_PREFIXES):
        raise LongnetError(f"refusing to import {dotted!r} named in a plans file: only classes from "
                           f"{', '.join(ALLOWED_MODULE_PREFIXES)} may be referenced")
    module, _, name = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise LongnetError(f"cannot import {dotted!r} named in plans ({e})") from None
    # an allowed module may re-export anything (os, subprocess.Popen, torch.load): only its own classes count
    if not isinstance(obj, type) or not f"{obj.__module__}.".startswith(ALLOWED_MODULE_PREFIXES):
        raise LongnetError(f"refusing {dotted!r} named in a plans file: it is not a class defined in "
                           f"{', '.join(ALLOWED_MODULE_PREFIXES)}")
    return obj


def build_network_from_architecture(architecture: dict, num_input_channels: int, num_output_channels: int,
                                    deep_supervision: bool = True) -> nn.Module:
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = resolve_class(kwargs[key])
    net_cls = resolve_class(architecture["network_class_name"])
    return net_cls(input_channels=num_input_channels, num_classes=num_output_channels,
                   deep_supervision=deep_supervision, **kwargs)


def architecture_with_overrides(architecture: dict, overrides: dict | None) -> dict:
    """The plans' architecture with a trainer's `arch_kwargs` changes applied (a copy; class names in them go
    through the same allow-list as the plans' own)."""
    if not overrides:
        return architecture
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise LongnetError(f"invalid network overrides {overrides!r} (expected a dict of arch_kwargs)")
    arch = dict(architecture)
    arch["arch_kwargs"] = {**architecture["arch_kwargs"], **overrides}
    return arch


def output_stage_prefixes(network: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of a planned U-Net's full-resolution output stage (last decoder stage, its
    upsampling, the segmentation layers): what `--transfer no-output` leaves freshly initialised."""
    decoder = getattr(network, "decoder", None)
    if decoder is None or not hasattr(decoder, "stages"):
        raise LongnetError("--transfer no-output needs a U-Net with a decoder (dynamic-network-architectures)")
    last = len(decoder.stages) - 1
    return (f"decoder.stages.{last}.", f"decoder.transpconvs.{last}.", "decoder.seg_layers.")


def checkpoint_arch_overrides(checkpoint: dict, trainer_name: str | None, architecture: dict) -> dict:
    """The `arch_kwargs` changes a model was trained with: from the checkpoint (longnet), else from the registered
    trainer of that name (a model folder trained by nnU-Net, e.g. nnUNetTrainerBN), else none."""
    if "arch_kwargs_overrides" in checkpoint:
        return checkpoint["arch_kwargs_overrides"] or {}
    if not trainer_name:
        return {}
    from longnet.registry import get_trainer

    try:
        trainer_cls = get_trainer(trainer_name)
    except LongnetError:  # a name this installation does not know: the plans' network as it is
        return {}
    hook = getattr(trainer_cls, "arch_kwargs_overrides", None)
    return hook(architecture) if hook is not None else {}
