"""A tiny longitudinal dataset WITH a health score, for the representation trainers (LEARNER, ClinImCL).

Preprocessed side (written with `save_case`): 6 subjects × 3 visits of 1×16×16×16, a bright ball whose radius
grows with time (at a subject-specific rate), `score` = 30 − 2·(radius − 3) in visits.json, the tiny plans of
tiny_seg_dataset and a 2-fold subject-level split. Raw side: 2 test subjects × 3 visits as NIfTI files in
raw/<name>/imagesTs with patientsTs.json and visitsTs.csv, for `longnet_predict` and `longnet_evaluate`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raw_datasets import write_image
from longnet.io.storage import save_case
from tiny_seg_dataset import tiny_plans

DATASET = "Dataset993_TinyScore"
SHAPE = (16, 16, 16)
TRAIN_SUBJECTS = [f"s{i}" for i in range(6)]
TEST_SUBJECTS = ["t0", "t1"]
N_VISITS = 3


def _visit(rng: np.random.Generator, r0: float, rate: float, k: int) -> tuple[np.ndarray, float]:
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    radius = r0 + rate * k
    r = np.sqrt((z - 7.5) ** 2 + (y - 7.5) ** 2 + (x - 7.5) ** 2)
    img = 100.0 + 200.0 * (r < radius) + rng.normal(0, 5.0, SHAPE)
    return img.astype(np.float32), round(30.0 - 2.0 * (radius - 3.0), 2)


def make_tiny_score_dataset(root: Path, dataset_name: str = DATASET) -> Path:
    """Write preprocessed/<name> and raw/<name> under root; returns the preprocessed folder."""
    root = Path(root)
    pre, raw = root / "preprocessed" / dataset_name, root / "raw" / dataset_name
    rng = np.random.default_rng(0)
    visits, subjects, test_rows, test_patients = {}, {}, [], {}
    for s in TRAIN_SUBJECTS + TEST_SUBJECTS:
        r0, rate = rng.uniform(2.5, 4.0), rng.uniform(0.3, 1.5)
        for k in range(N_VISITS):
            case, days = f"{s}_v{k}", 180.0 * k
            img, score = _visit(rng, r0, rate, k)
            if s in TEST_SUBJECTS:
                write_image(raw / "imagesTs" / f"{case}_0000.nii.gz", img)
                test_patients.setdefault(s, []).append(case)
                test_rows.append(f"{case},{days:g},{score}")
                continue
            data = ((img - img.mean()) / img.std())[None]
            save_case(pre / "nnUNetPlans_3d_fullres", case, data, np.zeros((1, *SHAPE), np.int8),
                      {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": list(SHAPE),
                       "bbox_used_for_cropping": [[0, v] for v in SHAPE],
                       "shape_after_cropping_and_before_resampling": list(SHAPE), "class_locations": {},
                       "labelled": False, "subject": s, "days": days})
            visits[case] = {"days": days, "subject": s, "visit_index": k, "labelled": False, "meta": {"score": score}}
            subjects.setdefault(s, []).append(case)
    plans = tiny_plans(dataset_name)
    plans["configurations"]["3d_fullres"].update(patch_size=list(SHAPE), median_image_size_in_voxels=list(SHAPE))
    dj = {"channel_names": {"0": "MRI"}, "labels": {"background": 0}, "numTraining": len(visits),
          "file_ending": ".nii.gz"}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(dj))
    (pre / "visits.json").write_text(json.dumps(visits))
    (pre / "subjects.json").write_text(json.dumps(subjects))
    folds = [TRAIN_SUBJECTS[:2], TRAIN_SUBJECTS[2:4]]
    (pre / "splits_final.json").write_text(json.dumps([
        {"train": [c for s in TRAIN_SUBJECTS if s not in v for c in subjects[s]],
         "val": [c for s in v for c in subjects[s]]} for v in folds]))
    (raw / "dataset.json").write_text(json.dumps(dj))
    (raw / "patientsTs.json").write_text(json.dumps(test_patients))
    (raw / "visitsTs.csv").write_text("case,days,score\n" + "\n".join(test_rows) + "\n")
    return pre
