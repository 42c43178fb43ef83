"""Preprocessed-case access, samplers, augmentation and background loading for trainers.

Names are resolved lazily so that importing a light submodule (e.g. the longitudinal samplers in a helper
process) does not pay for torch."""
from __future__ import annotations

__all__ = ["DatasetIndex", "batch_iterator", "default_num_workers"]


def __getattr__(name: str):
    if name == "DatasetIndex":
        from longnet.data.dataset_index import DatasetIndex

        return DatasetIndex
    if name in ("batch_iterator", "default_num_workers"):
        from longnet.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'longnet.data' has no attribute {name!r}")
