"""Plans files in nnU-Net's schema, with configuration inheritance (`inherits_from`) resolved."""
from __future__ import annotations

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
        return ConfigurationPlan(self._resolve(name, set()), name)

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
