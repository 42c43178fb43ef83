"""One model folder, `RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION/` (or a name given with
`longnet_train --output-name`, its `model.json` then naming trainer, plans and configuration), for every command
and plugin.

A model folder holds `plans.json`, `dataset.json` and `fold_N/checkpoint_*.pth` (the same layout as nnU-Net v2).
Its name is parsed here and nowhere else; checkpoints are read with `weights_only=True` only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

from longnet.errors import LongnetError

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
MODEL_RECORD = "model.json"  # {"trainer", "plans", "configuration"} of the run that wrote the folder


@dataclass(frozen=True)
class ModelName:
    """The three parts of `TRAINER__PLANS__CONFIGURATION` (each None when the folder is named otherwise)."""

    trainer: str | None
    plans: str | None
    configuration: str | None

    @classmethod
    def parse(cls, name: str) -> "ModelName":
        parts = name.split("__")
        return cls(*parts) if len(parts) == 3 and all(parts) else cls(None, None, None)

    def folder_name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    @classmethod
    def of_folder(cls, path: str | Path) -> "ModelName":
        """The names of a model folder: its `model.json` (written by longnet_train, e.g. for a folder named with
        --output-name), else the folder name."""
        record = Path(path) / MODEL_RECORD
        if record.is_file():
            try:
                d = json.loads(record.read_text(encoding="utf-8"))
                return cls(str(d["trainer"]), str(d["plans"]), str(d["configuration"]))
            except (OSError, ValueError, KeyError, TypeError):
                raise LongnetError(f"{MODEL_RECORD} must hold trainer, plans and configuration", record) from None
        return cls.parse(Path(path).name)


class ModelFolder:
    """A trained model on disk: its names, plans, dataset.json, folds and checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise LongnetError("model folder not found", self.path)
        self.name = ModelName.of_folder(self.path)

    @classmethod
    def from_names(cls, dataset: str | int, trainer: str, plans: str, configuration: str) -> "ModelFolder":
        """$LONGNET_RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION (an unset root is named in the error)."""
        from longnet.paths import dataset_name_from_id, results_root

        results = results_root()  # unset: the error names LONGNET_RESULTS, where the model is looked for
        path = results / dataset_name_from_id(dataset) / ModelName(trainer, plans, configuration).folder_name()
        if not path.is_dir():
            raise LongnetError(f"no trained model for trainer {trainer}, plans {plans}, configuration "
                               f"{configuration}", path)
        return cls(path)

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ names
    @property
    def trainer_name(self) -> str | None:
        return self.name.trainer

    @property
    def plans_name(self) -> str | None:
        return self.name.plans

    @property
    def dataset_folder_name(self) -> str:
        return self.path.parent.name

    def sibling(self, trainer: str | None = None, plans: str | None = None,
                configuration: str | None = None) -> Path:
        """Path of the model folder of the same dataset with some names changed (e.g. a cascade's other stage)."""
        n = self.name
        return self.path.parent / ModelName(trainer or n.trainer, plans or n.plans,
                                            configuration or n.configuration).folder_name()

    # ------------------------------------------------------------------ files
    def _json(self, name: str) -> dict:
        from longnet.utils.files import load_json

        path = self.path / name
        if not path.is_file():
            raise LongnetError(f"not a model folder: {name} is missing", self.path)
        value = load_json(path)
        if not isinstance(value, dict):
            raise LongnetError(f"{name} must hold a JSON object", path)
        return value

    @cached_property
    def plans(self) -> dict:
        return self._json("plans.json")

    @cached_property
    def dataset_json(self) -> dict:
        return self._json("dataset.json")

    @property
    def file_ending(self) -> str:
        return self.dataset_json.get("file_ending", ".nii.gz")

    @property
    def num_channels(self) -> int:
        dj = self.dataset_json
        return len(dj.get("channel_names") or dj.get("modality") or {"0": ""})

    def configuration(self, checkpoint: dict | None = None) -> str:
        """The configuration this model was trained with: the checkpoint's record, else the folder name."""
        ia = (checkpoint or {}).get("init_args")
        found = (ia.get("configuration") if isinstance(ia, dict) else None) or (checkpoint or {}).get(
            "configuration") or self.name.configuration
        if not found:
            raise LongnetError("cannot tell the configuration of this model folder (expected a folder named "
                               "TRAINER__PLANS__CONFIGURATION)", self.path)
        return str(found)

    # ------------------------------------------------------------------ folds and checkpoints
    def folds(self, checkpoint_name: str | None = None) -> list[str]:
        """Folds that hold `checkpoint_name` ('0', '1', ..., 'all'), sorted."""
        name = checkpoint_name or DEFAULT_CHECKPOINT
        return sorted(p.name[len("fold_"):] for p in self.path.glob("fold_*") if (p / name).is_file())

    def checkpoint_paths(self, folds: Sequence[str | int] | None = None,
                         checkpoint_name: str | None = None) -> list[Path]:
        """fold_<f>/<checkpoint_name> of the given folds (default: every fold that has it); each must exist."""
        name = checkpoint_name or DEFAULT_CHECKPOINT
        for f in folds or ():
            if str(f) != "all" and not str(f).isdigit():
                raise LongnetError(f"invalid fold {f!r} (expected an integer or 'all')")
        chosen = [str(f) for f in folds] if folds else self.folds(name)
        if not chosen:
            raise LongnetError(f"no fold_*/{name} in the model folder", self.path)
        paths = [self.path / f"fold_{f}" / name for f in chosen]
        for p in paths:
            if not p.is_file():
                raise LongnetError("checkpoint not found", p)
        return paths

    @staticmethod
    def load_checkpoint(path: str | Path) -> dict:
        """A checkpoint as a dict of tensors and plain values (never unpickles objects)."""
        from longnet.io.checkpoints import load_checkpoint

        return load_checkpoint(path, map_location="cpu")
