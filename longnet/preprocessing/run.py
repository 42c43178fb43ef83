"""Preprocess a whole dataset for one configuration: parallel over cases, resumable, atomic per case.

A `plan_fingerprint.json` in the output folder records the configuration the cases were made with; if the
plan changed, stale cases are removed before anything new is written."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from longnet.dataset.io import read_image_files, read_seg_file
from longnet.dataset.raw import RawDataset
from longnet.fingerprint.extractor import check_finite, image_dim, load_checked_seg, parallel_map
from longnet.planning.plans import Plans
from longnet.preprocessing.preprocessor import preprocess_case
from longnet.preprocessing.storage import case_is_complete, case_paths, save_case
from longnet.utils.files import load_json, remove_stale_temp_files, save_json


def _config_hash(plans: Plans, configuration: str, dataset_json: dict) -> str:
    conf = plans.configuration(configuration).conf
    relevant = {k: conf.get(k) for k in ("spacing", "normalization_schemes", "use_mask_for_norm",
                                         "resampling_fn_data_kwargs", "resampling_fn_seg_kwargs", "patch_size")}
    relevant["transpose_forward"] = plans.transpose_forward
    relevant["intensity"] = plans.foreground_intensity_properties_per_channel
    relevant["labels"] = dataset_json["labels"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def preprocess_one(case_id: str, image_files, label_file, plans_dict: dict, configuration: str, dataset_json: dict,
                   out_folder: str, extra_props: dict, valid_labels) -> str:
    plans = Plans(plans_dict)
    dim = image_dim(dataset_json)
    data, props = read_image_files(image_files, dim)
    check_finite(data, image_files)
    seg = load_checked_seg(label_file, data, props, dim, valid_labels) if label_file is not None else None
    data, seg, props = preprocess_case(data, seg, props, plans, configuration, dataset_json)
    props.update(extra_props)
    conf = plans.configuration(configuration)
    save_case(out_folder, case_id, data, seg, props, patch_size=conf.patch_size)
    return case_id


def preprocess_dataset(raw: RawDataset, plans: Plans, configuration: str, out_folder: str | Path,
                       num_processes: int = 2, verbose: bool = True) -> list[str]:
    """Write every case of `raw` into `out_folder`; cases already complete for this plan are skipped."""
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_folder)
    marker = out_folder / "plan_fingerprint.json"
    h = _config_hash(plans, configuration, raw.dataset_json)
    if marker.is_file() and load_json(marker).get("hash") != h:
        for p in out_folder.iterdir():
            if p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p)
    save_json({"hash": h, "configuration": configuration}, marker)
    todo = [c for c in raw.cases if not case_is_complete(out_folder, c)]
    valid = sorted(raw.label_manager.valid_values)
    jobs = []
    for cid in todo:
        case = raw.cases[cid]
        for path in case_paths(out_folder, cid).values():  # a crash may have left data without properties
            path.unlink(missing_ok=True)
        extra = {"subject": case.subject, "days": case.days, "visit_index": case.visit_index}
        jobs.append((cid, case.images, case.label, plans.plans, configuration, raw.dataset_json, str(out_folder),
                     extra, valid))
    parallel_map(preprocess_one, jobs, num_processes, f"preprocess {configuration}", verbose)
    return todo
