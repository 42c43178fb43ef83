"""Reuse one dataset's plans for another (e.g. to pretrain on A and finetune on B with the same network).

The copy keeps every planned value; only what ties plans to a dataset changes: `dataset_name`, `plans_name`,
each configuration's `data_identifier` (so the two datasets' preprocessed folders cannot be confused) and the
`image_reader_writer` the target's files need.
"""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

from longnet.errors import DatasetError, LongnetError
from longnet.utils.files import load_json, save_json


def target_reader_writer(raw_dataset: Path) -> str:
    """Class name of the reader/writer nnU-Net would pick for the target (its first case's first image decides
    between classes sharing an ending)."""
    from longnet.dataset.raw import RawDataset
    from longnet.dataset.reader_choice import example_image, reader_writer_for

    raw = RawDataset(raw_dataset)
    example = example_image(raw) if raw.cases else None
    return type(reader_writer_for(raw.dataset_json, example, raw.dataset_json_path)).__name__


def retarget_plans(plans: dict, target_dataset: str, source_plans: str, target_plans: str, reader_writer: str) -> dict:
    """A copy of `plans` for `target_dataset` under the plans name `target_plans`."""
    out = deepcopy(plans)
    out["dataset_name"] = target_dataset
    if target_plans != source_plans:
        for conf in out.get("configurations", {}).values():
            ident = conf.get("data_identifier") if isinstance(conf, dict) else None
            if ident is None:
                continue
            conf["data_identifier"] = (target_plans + ident[len(source_plans):] if ident.startswith(source_plans)
                                       else f"{target_plans}_{ident}")
    out["image_reader_writer"] = reader_writer
    out["plans_name"] = target_plans
    return out


def move_plans(source_dataset: str, target_dataset: str, source_plans: str, target_plans: str | None,
               preprocessed: Path, raw: Path) -> Path:
    """Write `preprocessed/<target>/<target_plans>.json` from the source dataset's plans; return its path."""
    target_plans = target_plans or source_plans
    src_file = preprocessed / source_dataset / f"{source_plans}.json"
    if not (preprocessed / source_dataset).is_dir():
        raise LongnetError("source dataset has no preprocessed folder; plan it first (longnet_plan_experiment)",
                           preprocessed / source_dataset)
    if not src_file.is_file():
        raise LongnetError("source plans not found; run the planner for them first", src_file)
    plans = load_json(src_file)
    if not isinstance(plans, dict) or "configurations" not in plans:
        raise DatasetError("not a plans file (no 'configurations')", src_file)
    reader = target_reader_writer(raw / target_dataset)
    dest_dir = preprocessed / target_dataset
    if not dest_dir.is_dir():
        raise LongnetError("target dataset has no preprocessed folder; run longnet_extract_fingerprint for it first",
                           dest_dir)
    dest = dest_dir / f"{target_plans}.json"
    save_json(retarget_plans(plans, target_dataset, source_plans, target_plans, reader), dest, sort_keys=False)
    return dest
