"""Ensembling as nnU-Net does it: per case, the models' probabilities are averaged in float32, then the first
maximum wins (regions: thresholds in `regions_class_order`), written in the first model's geometry."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from longnet.dataset.labels import LabelManager
from longnet.dataset.folder_setup import folder_setup
from longnet.dataset.reader_choice import reader_writer_by_name, reader_writer_for_plans
from longnet.errors import LongnetError
from longnet.inference.case_probabilities import load_case, load_probabilities, npz_cases, save_case_probabilities
from longnet.utils.files import atomic_path, load_json
from longnet.utils.parallel import map_processes


def copy_file(src: Path, dest: Path) -> None:
    with atomic_path(dest, suffix=dest.suffix) as tmp:
        shutil.copyfile(src, tmp)


def _merge_case(job: tuple) -> str:
    case, folders, out_dir, file_ending, dataset_json, rw_name, save_npz, overwrite = job
    dest = Path(out_dir) / f"{case}{file_ending}"
    if not overwrite and dest.is_file():
        return case
    from longnet.inference.export import label_dtype, probabilities_to_segmentation

    rw = reader_writer_by_name(rw_name)
    total, props = load_case(folders[0], case, file_ending, rw)
    total = total.copy()
    for folder in folders[1:]:
        probs = load_probabilities(Path(folder) / f"{case}.npz")
        if probs.shape != total.shape:
            raise LongnetError(f"probabilities shape {probs.shape} differs from {total.shape} in {folders[0]}",
                               Path(folder) / f"{case}.npz")
        total += probs
    total /= np.float32(len(folders))
    lm = LabelManager.from_dataset_json(dataset_json)
    seg = probabilities_to_segmentation(total, lm).astype(label_dtype(lm))
    if save_npz:
        save_case_probabilities(total, props, out_dir, case, Path(folders[0]) / f"{case}.pkl")
    rw.write_seg(seg, dest, props)
    return case


def _check_output(output_folder: Path, inputs: Sequence[Path]) -> None:
    out = output_folder.resolve()
    if any(out == Path(f).resolve() for f in inputs):
        raise LongnetError("the output folder must not be one of the input folders", output_folder)


def ensemble_folders(input_folders: Sequence[str | Path], output_folder: str | Path, num_processes: int = 1,
                     save_npz: bool = False) -> list[str]:
    """`longnet_ensemble`: average `{case}.npz` of every folder (all must hold the same cases) and write
    `{case}{file_ending}` (+ `.npz`/`.json`/`.pkl` with `save_npz`) and the first folder's dataset.json."""
    folders = [Path(f) for f in input_folders]
    output_folder = Path(output_folder)
    cases = [npz_cases(f) for f in folders]
    for f, c in zip(folders, cases):
        if not c:
            raise LongnetError("no {case}.npz probabilities (predict with --save_probabilities)", f)
    for f, c in zip(folders[1:], cases[1:]):
        if c != cases[0]:
            only_first, only_here = sorted(set(cases[0]) - set(c)), sorted(set(c) - set(cases[0]))
            raise LongnetError(f"case set differs from {folders[0]}: missing here {only_first[:5]}, "
                               f"extra here {only_here[:5]}", f)
    dj_file = folders[0] / "dataset.json"
    if not dj_file.is_file():
        raise LongnetError("dataset.json not found (the first folder must hold the dataset.json that "
                           "longnet_predict writes)", dj_file)
    _check_output(output_folder, folders)
    setup = folder_setup(folders[0])
    jobs = [(case, [str(f) for f in folders], str(output_folder), setup.file_ending, setup.dataset_json,
             setup.reader_writer.name, save_npz, True) for case in cases[0]]
    output_folder.mkdir(parents=True, exist_ok=True)
    done = map_processes(_merge_case, jobs, num_processes)
    copy_file(dj_file, output_folder / "dataset.json")
    return done


def model_identity(model_folder: Path) -> tuple[str, str, str, str]:
    """(dataset, trainer, plans, configuration) of `RES/<dataset>/<trainer>__<plans>__<configuration>`."""
    from longnet.io.model_folder import ModelName

    n = ModelName.parse(model_folder.name)
    if n.trainer is None:
        return model_folder.parent.name, "TRAINER", "PLANS", "CONFIG"
    return model_folder.parent.name, n.trainer, n.plans, n.configuration


def validation_npz_folders(model_folder: Path, folds: Sequence[int | str]) -> dict[str, Path]:
    """{case: its fold's validation folder} from every fold's `{case}.npz` (each fold must have them)."""
    where: dict[str, Path] = {}
    dataset, trainer, plans, config = model_identity(model_folder)
    for fold in folds:
        val = model_folder / f"fold_{fold}" / "validation"
        if not val.is_dir():
            raise LongnetError(f"fold {fold} has no validation folder: train every requested fold first "
                               f"(longnet_train {dataset} {config} {fold} -tr {trainer} -p {plans})", val)
        cases = npz_cases(val)
        if not cases:
            raise LongnetError(f"no {{case}}.npz probabilities for ensembling: rerun the validation with them "
                               f"(longnet_train {dataset} {config} {fold} -tr {trainer} -p {plans} --val --npz), "
                               "or pass --disable_ensembling", val)
        for case in cases:
            if case in where:
                raise LongnetError(f"case {case} is in the validation of two folds ({where[case].parent.name} "
                                   f"and fold_{fold})", val)
            where[case] = val
    return where


def ensemble_crossval(model_folders: Sequence[str | Path], output_folder: str | Path,
                      folds: Sequence[int | str], num_processes: int = 1, overwrite: bool = True) -> list[str]:
    """Ensemble the cross-validation predictions of trained models into `output_folder` (label maps only),
    with the first model's plans.json and dataset.json; `overwrite=False` keeps label maps already there."""
    models = [Path(m) for m in model_folders]
    per_model = [validation_npz_folders(m, folds) for m in models]
    for m, where in zip(models[1:], per_model[1:]):
        if set(where) != set(per_model[0]):
            missing = sorted(set(per_model[0]) - set(where))
            extra = sorted(set(where) - set(per_model[0]))
            raise LongnetError(f"validation cases differ from {models[0].name}: missing {missing[:5]}, "
                               f"extra {extra[:5]}", m)
    dataset_json = load_json(models[0] / "dataset.json")
    plans = load_json(models[0] / "plans.json")
    rw = reader_writer_for_plans(plans)
    ending = dataset_json.get("file_ending", ".nii.gz")
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "plans.json"):
        copy_file(models[0] / name, output_folder / name)
    jobs = [(case, [str(where[case]) for where in per_model], str(output_folder), ending, dataset_json, rw.name,
             False, overwrite) for case in sorted(per_model[0])]
    return map_processes(_merge_case, jobs, num_processes)
