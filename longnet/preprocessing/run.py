"""Preprocess a whole dataset for one configuration: parallel over cases, resumable, atomic per case.

A `plan_fingerprint.json` in the output folder records the configuration the cases were made with; if the
plan changed, stale cases are removed before anything new is written.

With alignment on (plans["longitudinal"]["align"] != "none") the unit of work is a subject: its visits are
registered to the first visit, cropped with one common box and then preprocessed as usual, so all visits of a
subject share shape and voxel correspondence. A subject counts as done only when all its cases (and their
transform files) are; an incomplete subject is redone whole."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import SimpleITK as sitk

from longnet.io.case_names import PLAN_FINGERPRINT_FILE, case_file_name
from longnet.dataset.raw import RawDataset
from longnet.fingerprint.extractor import check_finite, load_checked_seg, parallel_map, read_checked_images
from longnet.errors import LongnetError
from longnet.planning.plans import Plans
from longnet.preprocessing.alignment import align_visit, alignment_mode, save_transform
from longnet.imaging.cropping import union_bbox
from longnet.preprocessing.preprocessor import preprocess_case
from longnet.io.storage import case_is_complete, case_paths, list_cases, save_case
from longnet.utils.files import load_json, remove_stale_temp_files, save_json


def _config_hash(plans: Plans, configuration: str, dataset_json: dict) -> str:
    conf = plans.configuration(configuration).conf
    relevant = {k: conf.get(k) for k in ("spacing", "normalization_schemes", "use_mask_for_norm",
                                         "resampling_fn_data_kwargs", "resampling_fn_seg_kwargs", "patch_size")}
    relevant["transpose_forward"] = plans.transpose_forward
    relevant["intensity"] = plans.foreground_intensity_properties_per_channel
    relevant["labels"] = dataset_json["labels"]
    if alignment_mode(plans.plans) != "none":  # only then, so existing unaligned folders keep their hash
        relevant["align"] = alignment_mode(plans.plans)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def preprocess_one(case_id: str, image_files, label_file, plans_dict: dict, configuration: str, dataset_json: dict,
                   out_folder: str, extra_props: dict, valid_labels) -> str:
    plans = Plans(plans_dict)
    data, seg, props = _read_case(image_files, label_file, plans_dict, dataset_json, valid_labels)
    data, seg, props = preprocess_case(data, seg, props, plans, configuration, dataset_json)
    props.update(extra_props)
    conf = plans.configuration(configuration)
    save_case(out_folder, case_id, data, seg, props, patch_size=conf.patch_size)
    return case_id


def transform_path(folder: str | Path, case_id: str) -> Path:
    return Path(folder) / case_file_name(case_id, "transform")


def _read_case(image_files, label_file, plans_dict: dict, dataset_json: dict, valid_labels):
    """Read with the reader the plans name (nnU-Net's rule); each case keeps its own dimensionality here, mixed
    datasets having been refused by the fingerprint already."""
    reader = plans_dict.get("image_reader_writer") or "SimpleITKIO"
    data, props = read_checked_images(image_files, None, reader, len(dataset_json["channel_names"]))
    check_finite(data, image_files)
    seg = load_checked_seg(label_file, data, props, None, valid_labels, reader) if label_file is not None else None
    return data, seg, props


def preprocess_subject(cases: list[tuple], plans_dict: dict, configuration: str, dataset_json: dict,
                       out_folder: str, valid_labels, mode: str) -> list[str]:
    """Align every visit of one subject to its first visit, crop all with one box, preprocess and save.

    `cases` = [(case_id, image_files, label_file, extra_props), ...] in time order; the first is the reference."""
    plans = Plans(plans_dict)
    loaded = [_read_case(images, label, plans_dict, dataset_json, valid_labels) for _, images, label, _ in cases]
    if any(len(props.get("sitk_stuff", {}).get("spacing", ())) != 3 for _, _, props in loaded):
        raise LongnetError("intra-subject alignment needs 3D images (--align none for 2D datasets)", cases[0][1][0])
    ref_id = cases[0][0]
    ref_data, _, ref_props = loaded[0]
    ref_geometry = {**ref_props["sitk_stuff"], "size": list(ref_data.shape[1:][::-1])}
    aligned = []
    for (cid, images, _, _), (data, seg, props) in zip(cases, loaded):
        geometry = {**props["sitk_stuff"], "size": list(data.shape[1:][::-1])}
        try:
            if cid == ref_id:  # stays as read; an identity transform file all the same, so every case maps back alike
                tx = sitk.Euler3DTransform()
            else:
                data, seg, tx = align_visit(data, seg, geometry, ref_data[0], ref_geometry, mode)
        except RuntimeError as e:  # SimpleITK: e.g. a blank image leaves the metric without samples
            raise LongnetError(f"registration of {cid} to {ref_id} failed ({str(e).strip().splitlines()[-1][:200]})",
                               images[0]) from None
        props = {**props, "sitk_stuff": dict(ref_props["sitk_stuff"]), "spacing": list(ref_props["spacing"]),
                 "original_geometry": geometry,
                 "alignment": {"mode": mode, "reference_case": ref_id,
                               "transform_file": transform_path(out_folder, cid).name}}
        aligned.append((data, seg, props, tx))
    box = union_bbox([a[0] for a in aligned])
    box = [box[i] for i in plans.transpose_forward]
    conf = plans.configuration(configuration)
    for (cid, _, _, extra), (data, seg, props, tx) in zip(cases, aligned):
        data, seg, props = preprocess_case(data, seg, props, plans, configuration, dataset_json, bbox=box)
        props.update(extra)
        save_transform(tx, transform_path(out_folder, cid))  # before the case: its properties mark completeness
        save_case(out_folder, cid, data, seg, props, patch_size=conf.patch_size)
    return [c[0] for c in cases]


def _subject_complete(folder: Path, cases: list[str]) -> bool:
    return all(case_is_complete(folder, c) and transform_path(folder, c).is_file() for c in cases)


def _extra_props(raw: RawDataset, case_id: str, aligned: bool = False) -> dict:
    """The longitudinal properties stored with a case (from patientsTr.json / visitsTr.csv); aligned cases also
    record their subject's visits, which decided the registration reference and the common crop box."""
    case = raw.cases[case_id]
    extra = {"subject": case.subject, "days": case.days, "visit_index": case.visit_index}
    if aligned:
        extra["subject_visits"] = list(raw.subjects[case.subject])
    return extra


def _refresh_extra_props(folder: Path, case_id: str, extra: dict) -> None:
    """A finished case whose subject or days changed since: rewrite its properties only (the arrays do not
    depend on them), so per-case properties never contradict subjects.json / visits.json."""
    path = case_paths(folder, case_id)["props"]
    props = load_json(path)
    if any(props.get(k) != v for k, v in extra.items()):
        save_json({**props, **extra}, path, indent=None)


def _alignment_current(folder: Path, cases: list[str]) -> bool:
    """Whether a finished subject was aligned with today's visit list (reference = first visit). Folders from
    before `subject_visits` was recorded are judged by the reference alone."""
    for cid in cases:
        props = load_json(case_paths(folder, cid)["props"])
        if (props.get("alignment") or {}).get("reference_case") != cases[0] \
                or props.get("subject_visits", cases) != cases:
            return False
    return True


def _remove_gone_cases(folder: Path, raw: RawDataset) -> None:
    """Cases no longer in the raw dataset would still be trained on: remove their files."""
    for cid in list_cases(folder):
        if cid not in raw.cases:
            for path in [*case_paths(folder, cid).values(), transform_path(folder, cid)]:
                path.unlink(missing_ok=True)


def preprocess_dataset(raw: RawDataset, plans: Plans, configuration: str, out_folder: str | Path,
                       num_processes: int = 2, verbose: bool = True) -> list[str]:
    """Write every case of `raw` into `out_folder`; cases already complete for this plan are skipped."""
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_folder)
    marker = out_folder / PLAN_FINGERPRINT_FILE
    h = _config_hash(plans, configuration, raw.dataset_json)
    if marker.is_file() and load_json(marker).get("hash") != h:
        for p in out_folder.iterdir():
            if p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p)
    save_json({"hash": h, "configuration": configuration}, marker)
    valid = sorted(raw.label_manager.valid_values)
    mode = alignment_mode(plans.plans)
    if mode != "none":
        return _preprocess_aligned(raw, plans, configuration, out_folder, num_processes, verbose, mode, valid)
    _remove_gone_cases(out_folder, raw)
    todo = [c for c in raw.cases if not case_is_complete(out_folder, c)]
    for cid in raw.cases:
        if cid not in todo:
            _refresh_extra_props(out_folder, cid, _extra_props(raw, cid))
    jobs = []
    for cid in todo:
        case = raw.cases[cid]
        for path in case_paths(out_folder, cid).values():  # a crash may have left data without properties
            path.unlink(missing_ok=True)
        extra = _extra_props(raw, cid)
        jobs.append((cid, case.images, case.label, plans.plans, configuration, raw.dataset_json, str(out_folder),
                     extra, valid))
    parallel_map(preprocess_one, jobs, num_processes, f"preprocess {configuration}", verbose)
    return todo


def _preprocess_aligned(raw: RawDataset, plans: Plans, configuration: str, out_folder: Path, num_processes: int,
                        verbose: bool, mode: str, valid) -> list[str]:
    jobs, todo = [], []
    _remove_gone_cases(out_folder, raw)
    for subject, cases in raw.subjects.items():
        if _subject_complete(out_folder, cases) and _alignment_current(out_folder, cases):
            for cid in cases:  # days may have changed: they do not affect the registration
                _refresh_extra_props(out_folder, cid, _extra_props(raw, cid, aligned=True))
            continue
        specs = []
        for cid in cases:
            for path in [*case_paths(out_folder, cid).values(), transform_path(out_folder, cid)]:
                path.unlink(missing_ok=True)  # the common box depends on every visit: redo the subject whole
            case = raw.cases[cid]
            specs.append((cid, case.images, case.label, _extra_props(raw, cid, aligned=True)))
        todo += cases
        jobs.append((specs, plans.plans, configuration, raw.dataset_json, str(out_folder), valid, mode))
    parallel_map(preprocess_subject, jobs, num_processes, f"align ({mode}) + preprocess {configuration}", verbose)
    return todo
