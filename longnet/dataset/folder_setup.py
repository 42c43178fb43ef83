"""dataset.json, plans and reader/writer of a folder of predictions (what ensembling, postprocessing and
model selection need to read and write its label maps as nnU-Net would)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longnet.dataset.labels import LabelManager
from longnet.dataset.reader_choice import reader_writer_for, reader_writer_for_plans
from longnet.dataset.readers import ImageReaderWriter
from longnet.errors import LongnetError
from longnet.utils.files import load_json


@dataclass
class FolderSetup:
    dataset_json: dict
    plans: dict | None
    reader_writer: ImageReaderWriter
    label_manager: LabelManager

    @property
    def file_ending(self) -> str:
        return self.dataset_json.get("file_ending", ".nii.gz")


def folder_reader_writer(dataset_json: dict, plans: dict | None, folder: Path) -> ImageReaderWriter:
    """The class the plans name; without plans, nnU-Net's choice by file ending (example: a label map there)."""
    if plans is not None:
        return reader_writer_for_plans(plans)
    ending = dataset_json.get("file_ending", ".nii.gz")
    example = next((p for p in sorted(folder.glob(f"*{ending}")) if not p.name.startswith(".")), None)
    return reader_writer_for(dataset_json, example, folder / "dataset.json")


def folder_setup(folder: str | Path, plans_json: str | Path | None = None,
                 dataset_json: str | Path | None = None, plans_required: bool = False) -> FolderSetup:
    """dataset.json (`dataset_json`, else the folder's) and plans (`plans_json`, else the folder's plans.json if
    present; required with `plans_required`). longnet needs the plans only to pick the reader/writer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LongnetError("folder not found", folder)
    dj_path = Path(dataset_json) if dataset_json else folder / "dataset.json"
    if not dj_path.is_file():
        raise LongnetError("dataset.json not found", dj_path)
    dj = load_json(dj_path)
    if not isinstance(dj, dict) or "file_ending" not in dj:
        raise LongnetError("dataset.json needs 'labels' and 'file_ending'", dj_path)
    lm = LabelManager.from_dataset_json(dj, str(dj_path))
    plans_path = Path(plans_json) if plans_json else folder / "plans.json"
    if (plans_json or plans_required) and not plans_path.is_file():
        raise LongnetError("plans file not found", plans_path)
    plans = load_json(plans_path) if plans_path.is_file() else None
    if plans is not None and not isinstance(plans, dict):
        raise LongnetError("not a plans file (expected a JSON object)", plans_path)
    return FolderSetup(dj, plans, folder_reader_writer(dj, plans, folder), lm)
