"""Turn one raw case into its training copy: transpose → crop to nonzero → normalise → resample → foreground
locations. The same function serves preprocessing and inference, so both see identical inputs."""
from __future__ import annotations

import numpy as np

from longnet.dataset.labels import LabelManager
from longnet.planning.plans import Plans
from longnet.imaging.cropping import crop_to_nonzero
from longnet.imaging.normalization import get_scheme
from longnet.imaging.resampling import compute_new_shape, resample_data_or_seg_to_shape

FOREGROUND_SAMPLES = 10000
MIN_FOREGROUND_COVERAGE = 0.01


def preprocess_case(data: np.ndarray, seg: np.ndarray | None, props: dict, plans: Plans, configuration: str,
                    dataset_json: dict, bbox: list[list[int]] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (data float32 C×…, seg int8/int16 1×…, props with cropping/resampling bookkeeping).

    `bbox` ([[lo, hi], ...] in the TRANSPOSED axis order) replaces the case's own nonzero box: aligned visits of
    one subject share one box so they keep identical shapes and voxel correspondence."""
    conf = plans.configuration(configuration)
    props = dict(props)
    data = data.astype(np.float32)
    has_seg = seg is not None
    seg = np.copy(seg) if has_seg else None
    axes = [0, *[i + 1 for i in plans.transpose_forward]]
    data = data.transpose(axes)
    if has_seg:
        seg = seg.transpose(axes)
    original_spacing = [props["spacing"][i] for i in plans.transpose_forward]
    props["shape_before_cropping"] = [int(s) for s in data.shape[1:]]
    data, seg, bbox = crop_to_nonzero(data, seg, bbox=bbox)
    props["bbox_used_for_cropping"] = bbox
    props["shape_after_cropping_and_before_resampling"] = [int(s) for s in data.shape[1:]]
    target_spacing = conf.spacing
    if len(target_spacing) < data.ndim - 1:  # 2d configurations keep the slice spacing
        target_spacing = [original_spacing[0]] + target_spacing
    new_shape = compute_new_shape(data.shape[1:], original_spacing, target_spacing)
    data = normalize(data, seg, conf, plans.foreground_intensity_properties_per_channel)
    data = resample_data_or_seg_to_shape(data, new_shape, original_spacing, target_spacing,
                                         **conf["resampling_fn_data_kwargs"])
    seg = resample_data_or_seg_to_shape(seg, new_shape, original_spacing, target_spacing,
                                        **conf["resampling_fn_seg_kwargs"])
    if has_seg:
        lm = LabelManager.from_dataset_json(dataset_json)
        targets = list(lm.foreground_regions if lm.has_regions else lm.foreground_labels)
        if lm.ignore_label is not None:
            targets.append(tuple([-1] + lm.all_labels))
        props["class_locations"] = sample_foreground_locations(seg, targets)
    seg = seg.astype(np.int16 if np.max(seg) > 127 else np.int8)
    props["labelled"] = has_seg
    return data, seg, props


def normalize(data: np.ndarray, seg: np.ndarray, conf, intensity_props: dict) -> np.ndarray:
    for c in range(data.shape[0]):
        scheme = get_scheme(conf.normalization_schemes[c])(conf.use_mask_for_norm[c], intensity_props.get(str(c)))
        data[c] = scheme.run(data[c], seg[0])
    return data


def location_key(target) -> str:
    return ",".join(str(t) for t in target) if isinstance(target, (tuple, list)) else str(target)


def sample_foreground_locations(seg: np.ndarray, targets: list, seed: int = 1234) -> dict[str, np.ndarray]:
    """Up to 10,000 voxels per class/region (but ≥ 1% of its voxels), for foreground oversampling."""
    rs = np.random.RandomState(seed)
    fg = seg != 0
    coords = np.argwhere(fg)
    values = seg[fg]
    present = set(np.unique(values).tolist())
    out: dict[str, np.ndarray] = {}
    empty = np.zeros((0, seg.ndim), dtype=np.int64)
    for t in targets:
        if isinstance(t, (tuple, list)):
            mask = np.isin(values, t)
        else:
            if t not in present:
                out[location_key(t)] = empty
                continue
            mask = values == t
        locs = coords[mask]
        if len(locs) == 0:
            out[location_key(t)] = empty
            continue
        n = max(min(FOREGROUND_SAMPLES, len(locs)), int(np.ceil(len(locs) * MIN_FOREGROUND_COVERAGE)))
        out[location_key(t)] = locs[rs.choice(len(locs), n, replace=False)]
    return out
