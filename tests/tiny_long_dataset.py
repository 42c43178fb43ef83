"""A tiny preprocessed LONGITUDINAL dataset for sequence trainers (TFM): written with `save_case`, no raw data.

5 subjects with 2–5 visits of 1×8×16×16 on one grid (as after --align): a blob that grows with time plus
noise, days in visits.json, the tiny plans of tiny_seg_dataset with an 8×16×16 patch, and a 2-fold split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from longnet.io.storage import save_case
from tiny_seg_dataset import tiny_plans

DATASET = "Dataset992_TinyLong"
SHAPE = (8, 16, 16)
VISITS = {"s0": 5, "s1": 3, "s2": 4, "s3": 2, "s4": 3}


def make_tiny_long_dataset(root: Path, dataset_name: str = DATASET) -> Path:
    pre = Path(root) / "preprocessed" / dataset_name
    folder = pre / "nnUNetPlans_3d_fullres"
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    visits, subjects = {}, {}
    for s, n in VISITS.items():
        centre = rng.uniform([3, 6, 6], [5, 10, 10])
        for k in range(n):
            case, days = f"{s}_v{k}", 100.0 * k
            r = np.sqrt(((z - centre[0]) * 2) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
            img = (r < 3 + k).astype(np.float32) + rng.normal(0, 0.1, SHAPE).astype(np.float32)
            seg = np.zeros((1, *SHAPE), np.int8)
            save_case(folder, case, img[None], seg, {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": list(SHAPE),
                                                     "bbox_used_for_cropping": [[0, v] for v in SHAPE],
                                                     "shape_after_cropping_and_before_resampling": list(SHAPE),
                                                     "class_locations": {}, "labelled": False, "subject": s,
                                                     "days": days})
            visits[case] = {"days": days, "subject": s, "visit_index": k, "labelled": False, "meta": {}}
            subjects.setdefault(s, []).append(case)
    plans = tiny_plans(dataset_name)
    plans["configurations"]["3d_fullres"].update(patch_size=list(SHAPE), median_image_size_in_voxels=list(SHAPE))
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0},
                                                  "numTraining": len(visits), "file_ending": ".nii.gz"}))
    (pre / "visits.json").write_text(json.dumps(visits))
    (pre / "subjects.json").write_text(json.dumps(subjects))
    val = [["s0", "s3"], ["s1", "s2"]]
    splits = [{"train": [c for s, cs in subjects.items() if s not in v for c in cs],
               "val": [c for s in v for c in subjects[s]]} for v in val]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return pre
