"""A tiny preprocessed segmentation dataset written directly with `save_case` (no raw data, no planning).

6 labelled cases of 1×16×20×16 with a two-label blob, one unlabelled visit, a shrunken copy of nnU-Net's
Hippocampus plans (patch 16³, batch 2, 3 stages with 4/8/16 features) and a 3-fold splits_final.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from longnet.io.storage import save_case

DATASET = "Dataset990_TinySeg"
SHAPE = (16, 20, 16)


def tiny_plans(dataset_name: str = DATASET) -> dict:
    """nnU-Net 2.8.1's Task04 3d_fullres plans shrunk to this data (patch 16³, batch 2, 3 stages with 4/8/16
    features); written out here so that the tests need no ../shared."""
    conv = {"conv_op": "torch.nn.modules.conv.Conv3d", "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    resampling = {"order_z": 0, "force_separate_z": None}
    conf = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": [16, 16, 16], "median_image_size_in_voxels": list(SHAPE), "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, **resampling},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, **resampling},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, **resampling},
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                                         "kernel_sizes": [[3, 3, 3]] * 3,
                                         "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2],
                                         "n_conv_per_stage_decoder": [2, 2], **conv},
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    return {"dataset_name": dataset_name, "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": list(SHAPE), "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": conf},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 486420.21875, "mean": 22360.45703125, "median": 362.88250732421875, "min": 0.0,
                "percentile_00_5": 28.0, "percentile_99_5": 277682.03125, "std": 60654.62109375}}}


def _case(rng: np.random.Generator, labelled: bool):
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    c = rng.integers([5, 6, 5], [11, 14, 11])
    r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    seg = np.zeros(SHAPE, dtype=np.int8)
    seg[r < 4] = 1
    seg[(r < 4) & (y > c[1])] = 2
    data = rng.normal(0, 0.5, SHAPE).astype(np.float32) + seg.astype(np.float32)
    if not labelled:
        seg[:] = 0
    seg[0, 0, :3] = -1  # a little 'outside the nonzero mask'
    locs = {}
    for lab in (1, 2):
        vox = np.argwhere(seg == lab)
        locs[str(lab)] = [[0, *map(int, v)] for v in vox[:: max(1, len(vox) // 50)]]
    return data[None], seg[None], locs


def make_tiny_dataset(root: Path, dataset_name: str = DATASET, n_labelled: int = 6, unlabelled: int = 1) -> Path:
    """Write the dataset under root/preprocessed/<name>; returns that folder."""
    pre = Path(root) / "preprocessed" / dataset_name
    folder = pre / "nnUNetPlans_3d_fullres"
    rng = np.random.default_rng(0)
    cases, visits, subjects = [], {}, {}
    for i in range(n_labelled + unlabelled):
        cid = f"case_{i:03d}"
        labelled = i < n_labelled
        data, seg, locs = _case(rng, labelled)
        props = {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": list(SHAPE),
                 "bbox_used_for_cropping": [[0, s] for s in SHAPE],
                 "shape_after_cropping_and_before_resampling": list(SHAPE),
                 "class_locations": locs, "labelled": labelled, "subject": f"s{i}", "days": 0.0}
        save_case(folder, cid, data, seg, props)
        cases.append(cid)
        visits[cid] = {"days": 0.0, "subject": f"s{i}", "visit_index": 0, "labelled": labelled, "meta": {}}
        subjects[f"s{i}"] = [cid]
    (pre / "nnUNetPlans.json").write_text(json.dumps(tiny_plans(dataset_name)))
    (pre / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": len(cases), "file_ending": ".nii.gz"}))
    (pre / "visits.json").write_text(json.dumps(visits))
    (pre / "subjects.json").write_text(json.dumps(subjects))
    lab = cases[:n_labelled]
    splits = []
    for k in range(3):
        val = lab[2 * k:2 * k + 2]
        splits.append({"train": [c for c in cases if c not in val], "val": val})
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return pre


def set_env(monkeypatch, root: Path) -> None:
    """Point longnet at root/{raw,preprocessed,results}; no loader worker processes (2-core CI)."""
    for sub, var in (("raw", "LONGNET_RAW"), ("preprocessed", "LONGNET_PREPROCESSED"), ("results", "LONGNET_RESULTS")):
        (Path(root) / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(Path(root) / sub))
    monkeypatch.setenv("LONGNET_N_PROC_DA", "0")
    monkeypatch.setenv("LONGNET_COMPILE", "0")


def fold_dir(root: Path, trainer: str = "nnUNetTrainer", fold: str = "0", dataset_name: str = DATASET) -> Path:
    return Path(root) / "results" / dataset_name / f"{trainer}__nnUNetPlans__3d_fullres" / f"fold_{fold}"

