"""`longnet_predict -tr PriorConcatTrainer|DiffWeightingTrainer --patients patientsTs.json`: chained prediction.

Each subject's visits are predicted in time order (`visitsTs.csv` days when present, else the order of the
patients file). Visit t's prior is visit t−1: its image and, with `--prior-seg gt`, the label map this run just
predicted for it. A first visit is its own prior (zero segmentation channels).

Geometry choice: predictions are made on the raw test visits, with the CURRENT visit as reference. The prior
image (and its predicted label map, nearest neighbour) is registered onto the current visit with the alignment
mode the training data was preprocessed with (`longnet.preprocessing.alignment.align_visit`; `--align none`
plans: resampled in physical space), both are cropped with one box and preprocessed like training data, and the
current visit ⊕ prior go through the sliding window together (channels concatenated before tiling). The output
is therefore already in the current visit's own geometry, like nnUNetTrainer's, and no aligned prediction has to
be mapped back. Without `--patients` every input case is its own subject (no prior information).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from longnet.api import LongnetError, ModelFolder, Plans, load_json, save_json, visit_days
from longnet_priorseg.priors import network_input_array


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing beyond the core flags: `--patients` (subjects) and `--visits` (days) order the chain."""


# ---------------------------------------------------------------------------- subjects and order
def subject_visits(patients_path: str | None, visits_path: str | None, input_cases: Sequence[str]
                   ) -> dict[str, list[str]]:
    """{subject: [cases in time order]}: patients file order, re-sorted by `days` when every visit has one;
    input cases no subject lists become single-visit subjects."""
    subjects: dict[str, list[str]] = {}
    if patients_path:
        table = load_json(patients_path)
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise LongnetError("patients file must map subject -> [case, case, ...]", patients_path)
        subjects = {str(s): [str(c) for c in cs] for s, cs in table.items()}
        if visits_path is None and Path(patients_path).with_name("visitsTs.csv").is_file():
            visits_path = str(Path(patients_path).with_name("visitsTs.csv"))
    days = visit_days(visits_path)
    for s, cases in subjects.items():
        if cases and all(c in days for c in cases):
            subjects[s] = sorted(cases, key=lambda c: days[c])  # stable: ties keep the listed order
    listed = {c for cs in subjects.values() for c in cs}
    for c in input_cases:
        if c not in listed:
            subjects[c] = [c]
    return subjects


def chain_subject(cases: Sequence[str], step: Callable[[str, str | None, dict | None], dict]) -> dict[str, dict]:
    """Run `step(case, prior_case, prior_result)` over `cases` in order: visit t receives visit t−1's result
    (None for the first visit). Returns {case: result}."""
    results: dict[str, dict] = {}
    prior: str | None = None
    for case in cases:
        results[case] = step(case, prior, results.get(prior) if prior is not None else None)
        prior = case
    return results


# ---------------------------------------------------------------------------- models
def load_predictor(trainer_cls: type, model: ModelFolder, folds: Sequence[str] | None, checkpoint_name: str,
                   device: torch.device, args: argparse.Namespace):
    """A `Predictor` around the trainer's network (its `build_inference_network`) with every fold's weights,
    plus the training options."""
    from longnet.api import Predictor

    first_path = model.checkpoint_paths(folds, checkpoint_name)[0]
    first = model.load_checkpoint(first_path)
    if first.get("trainer_name") not in (None, trainer_cls.__name__):
        raise LongnetError(f"checkpoint was written by {first.get('trainer_name')}, not {trainer_cls.__name__}",
                           first_path)
    init_args = first.get("init_args")
    if not isinstance(init_args, dict) or "plans" not in init_args:
        raise LongnetError("checkpoint has no init_args (not written by a longnet trainer)", first_path)
    predictor = Predictor.from_model_folder(
        model.path, folds, checkpoint_name, device, trainer_cls=trainer_cls, step_size=args.step_size,
        use_mirroring=not args.disable_tta, tile_batch_size=getattr(args, "tile_batch_size", None),
        accumulate_dtype=torch.float16 if getattr(args, "accumulation", "fp16") == "fp16" else torch.float32,
        verbose=bool(getattr(args, "verbose", False)), keep_sums_on_host=bool(getattr(args, "not_on_device", False)))
    return predictor, dict(init_args.get("options") or {})


# ---------------------------------------------------------------------------- one visit
def prior_on_current_grid(prior: np.ndarray, prior_props: dict, prior_seg: np.ndarray | None,
                          current: np.ndarray, current_props: dict, mode: str
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """The prior image (C×Z×Y×X) and label map on the current visit's raw grid: registered (`mode` rigid /
    affine / deformable, channel 0 drives it) or, for 'none', resampled in physical space."""
    from longnet.api import geometry_mismatch
    from longnet.api import align_visit

    if mode == "none" and geometry_mismatch(current.shape[1:], current_props["sitk_stuff"], prior.shape[1:],
                                            prior_props["sitk_stuff"]) is None:
        return prior, prior_seg
    geometry = {**prior_props["sitk_stuff"], "size": list(prior.shape[1:][::-1])}
    ref_geometry = {**current_props["sitk_stuff"], "size": list(current.shape[1:][::-1])}
    seg = None if prior_seg is None else prior_seg.astype(np.int16)
    try:
        data, seg, _ = align_visit(prior, seg, geometry, current[0], ref_geometry, mode,
                                   transform=sitk.Transform() if mode == "none" else None)
    except RuntimeError as e:  # SimpleITK: e.g. a blank image leaves the metric without samples
        raise LongnetError(f"registration of the prior visit failed ({str(e).strip().splitlines()[-1][:200]})") \
            from None
    return data, seg


def preprocess_pair(current: np.ndarray, current_props: dict, prior: np.ndarray, prior_seg: np.ndarray | None,
                    plans: Plans, configuration: str, dataset_json: dict):
    """Both visits (already on the current visit's grid) cropped with one box and preprocessed like training
    data → (current C×…, prior C×…, prior label map 1×… or None, the current visit's properties)."""
    from longnet.api import union_bbox
    from longnet.api import preprocess_case

    box = union_bbox([current, prior])
    box = [box[i] for i in plans.transpose_forward]
    cur, _, props = preprocess_case(current, None, dict(current_props), plans, configuration, dataset_json, bbox=box)
    pri, pseg, _ = preprocess_case(prior, prior_seg, dict(current_props), plans, configuration, dataset_json,
                                   bbox=box)
    props.pop("class_locations", None)
    return cur, pri, (pseg if prior_seg is not None else None), props


# ---------------------------------------------------------------------------- entry point
def run_prediction(trainer_cls: type, model: ModelFolder, folds: Sequence[str] | None, input_folder: Path,
                   output_folder: Path, args: argparse.Namespace, device: torch.device) -> None:
    """The prediction contract of the module docstring; writes `{case}{ending}`, `predictions.json`,
    dataset.json and plans.json into `output_folder`."""
    from longnet.api import reader_writer_for_plans
    from longnet.api import export_prediction
    from longnet.api import list_input_cases
    from longnet.api import alignment_mode

    input_folder, output_folder = Path(input_folder), Path(output_folder)
    checkpoint = getattr(args, "checkpoint", None) or "checkpoint_final.pth"
    predictor, options = load_predictor(trainer_cls, model, folds, checkpoint, torch.device(device), args)
    plans, dj, lm = predictor.plans, predictor.dataset_json, predictor.label_manager
    ending = dj.get("file_ending", ".nii.gz")
    n_channels = len(dj.get("channel_names") or dj.get("modality") or {})
    files = dict(list_input_cases(input_folder, ending, n_channels))
    patients = getattr(args, "patients", None)
    if not patients:
        print("longnet_predict: no --patients given: every case is its own subject (predicted without a prior)")
    subjects = subject_visits(patients, getattr(args, "visits", None), sorted(files))
    missing = [c for cs in subjects.values() for c in cs if c not in files]
    if missing:
        raise LongnetError(f"{len(missing)} visit(s) of the patients file have no images in the input folder "
                           f"(e.g. {', '.join(missing[:3])})", input_folder)
    mode = alignment_mode(plans.plans)
    labels = list(lm.foreground_labels) if (options.get("prior_seg") or "none") == "gt" else []
    rw = reader_writer_for_plans(plans)
    dim = predictor.input_dimension
    record: dict[str, dict] = {}
    output_folder.mkdir(parents=True, exist_ok=True)

    def step(case: str, prior: str | None, prior_result: dict | None) -> dict:
        current, props = rw.read_images(files[case], dim)
        dest = output_folder / f"{case}{ending}"
        if not (getattr(args, "continue_prediction", False) and dest.is_file()):
            if prior_result is None:
                pdata, pseg = current, None
            else:
                pdata, pseg = prior_on_current_grid(prior_result["data"], prior_result["props"],
                                                    prior_result["seg"] if labels else None, current, props, mode)
            cur, pri, pseg_pre, pre_props = preprocess_pair(current, props, pdata, pseg, plans,
                                                            predictor.configuration_name, dj)
            logits = predictor.predict_preprocessed(network_input_array(cur, pri, pseg_pre, labels))
            export_prediction(logits, pre_props, plans, predictor.configuration, lm, dest,
                              bool(getattr(args, "save_probabilities", False)))
        seg, _ = rw.read_seg(dest)
        record[case] = {"prior": prior or case, "prior_segmentation": (
            "none" if not labels else (f"prediction of {prior}" if prior else "zeros (first visit)"))}
        print(f"{case}: predicted" + (f" with prior {prior}" if prior else " (first visit, itself as prior)"),
              flush=True)
        return {"data": current, "props": props, "seg": seg}

    for subject, cases in subjects.items():
        chain_subject(cases, step)
        for c in cases:
            record[c]["subject"] = subject
    save_json({"trainer": trainer_cls.__name__, "alignment": mode, "geometry": "each visit's own (current visit "
               "is the registration reference)", "prior_segmentation": options.get("prior_seg") or "none",
               "visits": record}, output_folder / "predictions.json")
    save_json(dj, output_folder / "dataset.json")
    save_json(plans.plans, output_folder / "plans.json")
    print(f"predicted {len(record)} visit(s) of {len(subjects)} subject(s) into {output_folder}")
