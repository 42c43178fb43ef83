"""`longnet_predict -tr TFMTrainer --patients patientsTs.json`: forecast every subject's last listed visit
(or the visit at `--target-days`) from its earlier visits.

Per subject: the context visits (and the true target, when it is in the input folder) are brought onto the
grid of the LAST CONTEXT VISIT (with the alignment mode the training data was preprocessed with, `--align`
recorded in the plans, registering only visits without a transform (`alignments.VisitAlignments`); else resampled
in physical space), preprocessed with `preprocess_case` and
the plans using one crop box for all visits (as aligned preprocessing does), so they stay in voxel
correspondence; min–max normalised per volume, integrated by the learned flow and
written back in the last context visit's geometry, one file per channel (`{case}_{CCCC}{ending}`, the raw
layout). Intensities are the model's [0, 1] per-volume min–max scale. Also written: `reference/` (the true
target on the same grid and scale, for `longnet_evaluate --task forecast`), with `--with-lci` the LCI
baseline in `lci/`, with `--with-context-mean` the untrained model's forecast (mean of the filled context)
in `context_mean/`, and `forecasts.json` (which visits each forecast used).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from longnet.api import (CaseGeometry, LongnetError, ModelFolder, Plans, alignment_mode, parse_options,
    preprocess_case, read_image_files, save_json, write_image)
from longnet_tfm.alignments import VisitAlignments
from longnet_tfm.data import minmax_per_channel, time_gaps
from longnet_tfm.flow import reduce_slots
from longnet_tfm.inference import integrate_slots, sliding_network
from longnet_tfm.ode import METHODS
from longnet_tfm.subjects import ForecastJob, default_visits_csv, load_days, load_patients, plan_jobs


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--target-days", dest="target_days", type=float, default=None,
      help="TFM: forecast the visit at this day (context = earlier visits; default: the last listed visit)")
    a("--with-lci", dest="with_lci", action="store_true",
      help="TFM: also write the last-context-image baseline into OUT/lci/")
    a("--with-context-mean", dest="with_context_mean", action="store_true",
      help="TFM: also write the mean of the filled context slots (= the untrained model's forecast) into "
           "OUT/context_mean/")
    a("--ode-method", dest="ode_method", choices=METHODS, default=None, help="TFM: solver (default: as trained)")
    a("--ode-steps", dest="ode_steps", type=int, default=None, help="TFM: solver steps (default: as trained)")
    a("--reduction", choices=("mean", "last"), default=None, help="TFM: temporal reduction (default: as trained)")
    if not any("--visits" in act.option_strings for act in parser._actions):
        a("--visits", default=None, help="visits CSV (case,days); default: visitsTs.csv next to --patients")


# ---------------------------------------------------------------------------- models
def load_models(model: ModelFolder, folds: Sequence[str] | None, checkpoint_name: str,
                device: torch.device) -> tuple[list[torch.nn.Module], dict, Plans, dict]:
    """Networks of the requested folds (default: every fold_* with the checkpoint), the first checkpoint's
    settings, the plans and dataset.json."""
    from longnet_tfm.trainer import network_from_checkpoint

    nets, first = [], None
    for path in model.checkpoint_paths(folds, checkpoint_name):
        ckpt = model.load_checkpoint(path)
        if ckpt.get("trainer_name") not in (None, "TFMTrainer") and not (ckpt.get("extra") or {}).get("net_config"):
            raise LongnetError(f"checkpoint was written by {ckpt.get('trainer_name')}, not TFMTrainer", path)
        nets.append(network_from_checkpoint(ckpt, model.dataset_json).to(device).eval())
        first = first or ckpt
    return nets, first, Plans(model.plans), model.dataset_json


def _settings(ckpt: dict, args: argparse.Namespace) -> dict:
    """The inference settings the model was trained with (its checkpoint), overridden by the command line."""
    from longnet_tfm.trainer import TFMOptions

    trained = parse_options(TFMOptions, (ckpt.get("init_args") or {}).get("options") or {})
    inf = (ckpt.get("extra") or {}).get("inference") or {}
    out = {k: inf.get(k, getattr(trained, k)) for k in ("n_context", "ode_method", "ode_steps", "reduction")}
    for k in ("ode_method", "ode_steps", "reduction"):
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    return out


# ---------------------------------------------------------------------------- geometry
def _sitk_channel(data: np.ndarray, c: int, props: dict) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(data[c]))
    g = props["sitk_stuff"]
    img.SetSpacing(g["spacing"])
    img.SetOrigin(g["origin"])
    img.SetDirection(g["direction"])
    return img


def bring_onto_grid(data: np.ndarray, props: dict, ref_data: np.ndarray, ref_props: dict, alignment: str,
                    transform: sitk.Transform | None = None) -> tuple[np.ndarray, sitk.Transform | None]:
    """(`data` on the reference visit's grid, the transform used). With alignment: registered with longnet's
    intra-subject alignment (the mode the training data was preprocessed with), or moved by `transform` when one
    is given; without alignment, resampled in physical space (identity) when the grids differ (transform None)."""
    from longnet.api import geometry_mismatch

    if alignment != "none":
        from longnet.api import align_visit

        geometry = {**props["sitk_stuff"], "size": list(data.shape[1:][::-1])}
        ref_geometry = {**ref_props["sitk_stuff"], "size": list(ref_data.shape[1:][::-1])}
        try:
            out, _, transform = align_visit(data, None, geometry, ref_data[0], ref_geometry, alignment,
                                            transform=transform)
        except RuntimeError as e:  # SimpleITK: e.g. a blank image leaves the metric without samples
            raise LongnetError(f"registration to the last context visit failed "
                               f"({str(e).strip().splitlines()[-1][:200]})") from None
        return out, transform
    if geometry_mismatch(data.shape[1:], props["sitk_stuff"], ref_data.shape[1:], ref_props["sitk_stuff"]) is None:
        return data, None
    ref_img = _sitk_channel(ref_data, 0, ref_props)
    out = []
    for c in range(data.shape[0]):
        moved = sitk.Resample(_sitk_channel(data, c, props), ref_img, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32)
        out.append(sitk.GetArrayFromImage(moved))
    return np.stack(out).astype(np.float32), None


def export_volume(vol: np.ndarray, props: dict, plans: Plans, configuration: str, out_dir: Path, case: str,
                  ending: str) -> list[Path]:
    """C×(preprocessed grid) → the reference visit's original geometry, one file per channel."""
    geometry = CaseGeometry.of(props, plans, plans.configuration(configuration))
    full = geometry.invert(np.asarray(vol, np.float32), "image", fill=0.0).astype(np.float32)
    paths = []
    for c in range(full.shape[0]):
        dest = out_dir / f"{case}_{c:04d}{ending}"
        write_image(full[c], dest, props)
        paths.append(dest)
    return paths


# ---------------------------------------------------------------------------- one subject
def _files(input_folder: Path, case: str, n_channels: int, ending: str) -> list[Path]:
    files = [input_folder / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise LongnetError(f"images of case {case} not found in the input folder", missing[0])
    return files


def prepare_subject(job: ForecastJob, input_folder: Path, plans: Plans, configuration: str, dataset_json: dict,
                    alignment: str, alignments: VisitAlignments) -> dict:
    """Context slots (filled), LCI and reference, preprocessed on ONE grid (the last context visit's, cropped
    with the union box of all visits as preprocessing does for aligned subjects), each min–max normalised.
    `alignments` supplies existing transforms and keeps the new ones."""
    from longnet.api import fill_sparse
    from longnet.api import union_bbox

    n_ch = len(dataset_json.get("channel_names") or {"0": ""})
    ending = dataset_json.get("file_ending", ".nii.gz")
    present = [c for c in job.context if c is not None]
    ref_case = job.last_context
    ref_files = _files(input_folder, ref_case, n_ch, ending)
    ref_data, ref_props = read_image_files(ref_files)
    ref_geometry = {**ref_props["sitk_stuff"], "size": list(ref_data.shape[1:][::-1])}
    cases = present + ([job.target] if job.target_exists else [])
    arrays = []
    for case in cases:
        if case == ref_case:
            arrays.append(ref_data)
            continue
        files = _files(input_folder, case, n_ch, ending)
        data, props = read_image_files(files)
        known = None
        if alignment != "none":
            geometry = {**props["sitk_stuff"], "size": list(data.shape[1:][::-1])}
            known = alignments.lookup(case, files[0], geometry, ref_case, ref_files[0], ref_geometry)
        moved, transform = bring_onto_grid(data, props, ref_data, ref_props, alignment, known)
        if known is None and transform is not None:  # registered just now
            alignments.store(transform, case, files[0], ref_case, ref_files[0])
        arrays.append(moved)
    box = union_bbox(arrays)
    box = [box[i] for i in plans.transpose_forward]
    vols, props = {}, None
    for case, arr in zip(cases, arrays):
        data, _, p = preprocess_case(arr, None, dict(ref_props), plans, configuration, dataset_json, bbox=box)
        vols[case] = minmax_per_channel(data)
        props = props or p
    slots = fill_sparse([vols[c] if c is not None else None for c in job.context])
    return {"context": np.stack(slots), "lci": vols[ref_case], "reference": vols.get(job.target),
            "props": props, "gaps": time_gaps(job.context_days, job.target_days)}


# ---------------------------------------------------------------------------- entry point
def _preprocessed_folder(model: ModelFolder, conf) -> Path | None:
    """The model's aligned preprocessed cases (whose stored transforms prediction may reuse), if present here."""
    try:
        from longnet.api import preprocessed_root

        folder = preprocessed_root() / model.dataset_folder_name / conf.data_identifier
    except LongnetError:  # LONGNET_PREPROCESSED unset: predicting on a machine without the preprocessed data
        return None
    return folder if folder.is_dir() else None


def run_prediction(model: ModelFolder, folds: Sequence[str] | None, input_folder: Path, output_folder: Path,
                   args: argparse.Namespace, device: torch.device) -> None:
    """The prediction contract (see the module docstring)."""
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise LongnetError("input folder not found", input_folder)
    if output_folder.resolve() == input_folder.resolve():
        raise LongnetError("output folder must differ from the input folder", output_folder)
    device = torch.device(device)
    checkpoint_name = getattr(args, "checkpoint", None) or "checkpoint_final.pth"
    nets, ckpt, plans, dataset_json = load_models(model, folds, checkpoint_name, device)
    settings = _settings(ckpt, args)
    configuration = model.configuration(ckpt)
    conf = plans.configuration(configuration)
    options = (ckpt.get("init_args") or {}).get("options") or {}
    patch = options.get("patch_size")
    patch = conf.patch_size if patch in (None, "full") else [int(v) for v in str(patch).split(",")]
    alignment = alignment_mode(plans.plans)
    patients_path = getattr(args, "patients", None)
    patients = load_patients(patients_path)
    visits_csv = getattr(args, "visits", None) or default_visits_csv(patients_path)
    days = load_days(visits_csv, patients)
    jobs, skipped = plan_jobs(patients, days, settings["n_context"], getattr(args, "target_days", None))
    for msg in skipped:
        print(f"skipping subject {msg}")
    if not jobs:
        raise LongnetError("no subject has a visit to forecast from", patients_path)
    ending = dataset_json.get("file_ending", ".nii.gz")
    conditioned = any(n.cfg.condition_on_days for n in nets)
    record = []
    alignments = VisitAlignments(alignment, _preprocessed_folder(model, conf), output_folder / "alignments")
    for job in jobs:
        item = prepare_subject(job, input_folder, plans, configuration, dataset_json, alignment, alignments)
        ctx = torch.from_numpy(item["context"])[None].to(device)
        gaps = torch.from_numpy(item["gaps"])[None].to(device) if conditioned else None
        fits = all(s <= p for s, p in zip(ctx.shape[3:], patch))
        models = nets if fits else [sliding_network(n, patch) for n in nets]
        x1 = integrate_slots(models, ctx, gaps, settings["ode_method"], settings["ode_steps"])
        pred = reduce_slots(x1, settings["reduction"])[0].float().cpu().numpy()
        written = export_volume(pred, item["props"], plans, configuration, output_folder, job.target, ending)
        if item["reference"] is not None:
            export_volume(item["reference"], item["props"], plans, configuration, output_folder / "reference",
                          job.target, ending)
        if getattr(args, "with_lci", False):
            export_volume(item["lci"], item["props"], plans, configuration, output_folder / "lci", job.target,
                          ending)
        if getattr(args, "with_context_mean", False):
            export_volume(item["context"].mean(0), item["props"], plans, configuration, output_folder / "context_mean",
                          job.target, ending)
        record.append({"subject": job.subject, "target": job.target, "target_days": job.target_days,
                       "target_in_input": job.target_exists, "context": job.context,
                       "context_days": job.context_days, "geometry_of": job.last_context,
                       "files": [p.name for p in written]})
        print(f"{job.subject}: forecast {job.target} (day {job.target_days:g}) from "
              f"{', '.join(c for c in job.context if c)}", flush=True)
    if alignment != "none":
        print(alignments.summary())
    save_json({"settings": settings, "checkpoint": checkpoint_name, "alignment": alignment,
               "alignment_sources": alignments.counts,
               "intensity_scale": "per-volume min-max [0, 1] of the preprocessed images", "forecasts": record},
              output_folder / "forecasts.json")
