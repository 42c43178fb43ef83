"""Plans files in nnU-Net's schema, with configuration inheritance (`inherits_from`) resolved."""
from __future__ import annotations

import math
from copy import deepcopy
from pathlib import Path

from longnet.errors import DatasetError
from longnet.utils.files import load_json


class Plans:
    def __init__(self, plans: dict, source: str | Path = "plans"):
        if not isinstance(plans, dict) or "configurations" not in plans:
            raise DatasetError("not a plans file (no 'configurations')", source)
        self.plans = plans
        self.source = str(source)

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        return cls(load_json(path), path)

    @property
    def dataset_name(self) -> str:
        return self.plans["dataset_name"]

    @property
    def plans_name(self) -> str:
        return self.plans["plans_name"]

    @property
    def transpose_forward(self) -> list[int]:
        return list(self.plans["transpose_forward"])

    @property
    def transpose_backward(self) -> list[int]:
        return list(self.plans["transpose_backward"])

    @property
    def foreground_intensity_properties_per_channel(self) -> dict:
        return self.plans["foreground_intensity_properties_per_channel"]

    @property
    def available_configurations(self) -> list[str]:
        return list(self.plans["configurations"].keys())

    def configuration(self, name: str) -> "ConfigurationPlan":
        """The resolved configuration `name`; a hand-edited patch_size, batch_size or spacing that training or
        inference could not use raises DatasetError naming this plans file and the key."""
        conf = self._resolve(name, set())
        check_configuration(conf, name, self.source)
        return ConfigurationPlan(conf, name)

    def _resolve(self, name: str, seen: set) -> dict:
        confs = self.plans["configurations"]
        if name not in confs:
            raise DatasetError(f"configuration {name!r} not in plans (available: {', '.join(confs)})", self.source)
        if name in seen:
            raise DatasetError(f"circular 'inherits_from' at configuration {name!r}", self.source)
        conf = deepcopy(confs[name])
        parent = conf.pop("inherits_from", None)
        if parent is None:
            return conf
        base = self._resolve(parent, seen | {name})
        base.update(conf)
        return base


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_configuration(conf: dict, name: str, source: str) -> None:
    """Refuse values that would fail deep inside training or inference (or silently misbehave): a patch size of
    the wrong length, zero, negative, fractional or not divisible by the network's downsampling; a batch size
    below 1; a spacing that is not positive. Only keys present are checked (partial plans are used in tests)."""
    where = f"configuration {name!r}:"
    patch = conf.get("patch_size")
    if "patch_size" in conf and not (isinstance(patch, (list, tuple)) and len(patch) in (2, 3)
                                     and all(_is_int(p) and p >= 1 for p in patch)):
        raise DatasetError(f"{where} 'patch_size' must be a list of 2 or 3 positive integers, got {patch!r}", source)
    if "batch_size" in conf and not (_is_int(conf["batch_size"]) and conf["batch_size"] >= 1):
        raise DatasetError(f"{where} 'batch_size' must be an integer >= 1, got {conf['batch_size']!r}", source)
    spacing = conf.get("spacing")
    if "spacing" in conf and not (isinstance(spacing, (list, tuple)) and len(spacing) in (2, 3)
                                  and all(_is_number(x) and x > 0 for x in spacing)):
        raise DatasetError(f"{where} 'spacing' must be a list of 2 or 3 positive numbers, got {spacing!r}", source)
    if patch is None:
        return
    if spacing is not None and len(spacing) != len(patch):
        raise DatasetError(f"{where} 'patch_size' {list(patch)} and 'spacing' {list(spacing)} have different "
                           "lengths (both have one entry per image axis)", source)
    arch = (conf.get("architecture") or {}).get("arch_kwargs") or {}
    for key in ("strides", "kernel_sizes"):
        for i, entry in enumerate(arch.get(key) or []):
            if isinstance(entry, (list, tuple)) and len(entry) != len(patch):
                raise DatasetError(f"{where} 'patch_size' {list(patch)} has {len(patch)} axes but architecture "
                                   f"{key}[{i}] has {len(entry)}", source)
    strides = [e for e in arch.get("strides") or [] if isinstance(e, (list, tuple)) and all(_is_int(x) for x in e)]
    for axis, p in enumerate(patch):
        factor = math.prod(e[axis] for e in strides) if strides else 1
        if factor > 0 and p % factor:
            raise DatasetError(f"{where} 'patch_size' {list(patch)}: {p} (axis {axis}) is not divisible by {factor}, "
                               "the network's total downsampling along that axis", source)


class ConfigurationPlan:
    def __init__(self, conf: dict, name: str):
        self.conf = conf
        self.name = name

    def __getitem__(self, key):
        return self.conf[key]

    def get(self, key, default=None):
        return self.conf.get(key, default)

    @property
    def data_identifier(self) -> str:
        return self.conf["data_identifier"]

    @property
    def patch_size(self) -> list[int]:
        return list(self.conf["patch_size"])

    @property
    def batch_size(self) -> int:
        return int(self.conf["batch_size"])

    @property
    def spacing(self) -> list[float]:
        return list(self.conf["spacing"])

    @property
    def batch_dice(self) -> bool:
        return bool(self.conf.get("batch_dice", False))

    @property
    def normalization_schemes(self) -> list[str]:
        return list(self.conf["normalization_schemes"])

    @property
    def use_mask_for_norm(self) -> list[bool]:
        return list(self.conf["use_mask_for_norm"])

    @property
    def architecture(self) -> dict:
        return self.conf["architecture"]

    @property
    def previous_stage(self) -> str | None:
        return self.conf.get("previous_stage")

    @property
    def is_2d(self) -> bool:
        return len(self.conf["patch_size"]) == 2

    @property
    def pool_op_kernel_sizes(self) -> list:
        return self.conf["architecture"]["arch_kwargs"]["strides"]
