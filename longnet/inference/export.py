"""Turn logits on the preprocessed grid back into a label map (and probabilities) in the input's geometry.

The inverse of preprocessing, in reverse order: resample to the cropped original shape, nonlinearity,
argmax or region painting, paste into the uncropped volume, transpose back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from longnet.dataset.reader_choice import reader_writer_for_plans
from longnet.dataset.labels import LabelManager
from longnet.imaging.case_geometry import CaseGeometry
from longnet.planning.plans import ConfigurationPlan, Plans
from longnet.utils.files import atomic_path, save_json


def _is_half(x) -> bool:
    return x.dtype == torch.float16 if isinstance(x, torch.Tensor) else getattr(x, "dtype", None) == np.float16


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def apply_nonlinearity(logits: np.ndarray, label_manager: LabelManager) -> np.ndarray:
    """Softmax over the class axis, or an independent sigmoid per region."""
    logits = logits.astype(np.float32, copy=False)
    if label_manager.has_regions:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def probabilities_to_segmentation(probs: np.ndarray, label_manager: LabelManager) -> np.ndarray:
    """Argmax, or regions painted in `regions_class_order` where their probability exceeds 0.5."""
    if label_manager.has_regions:
        seg = np.zeros(probs.shape[1:], dtype=np.uint16)
        for i, c in enumerate(label_manager.regions_class_order):
            seg[probs[i] > 0.5] = c
        return seg
    return probs.argmax(0).astype(np.uint16)


def logits_to_segmentation(logits: np.ndarray, label_manager: LabelManager) -> np.ndarray:
    """Same result as softmax + argmax without computing the softmax (it is monotonic)."""
    if label_manager.has_regions:
        return probabilities_to_segmentation(logits > 0, label_manager)  # sigmoid(x) > 0.5  <=>  x > 0
    return logits.argmax(0).astype(np.uint16)


def label_dtype(label_manager: LabelManager) -> type:
    """The smallest unsigned type that holds every label (what nnU-Net writes)."""
    return np.uint8 if max(label_manager.all_labels) < 255 else np.uint16


def resample_logits_to_cropped_shape(logits, props: dict, plans: Plans, configuration: ConfigurationPlan) -> np.ndarray:
    """Undo the resampling step with the plan's probability resampling (order 1, z order 0 by default).
    float16 logits (fp16 tile sums, what nnU-Net hands to its export) are resampled into float16 as nnU-Net does:
    that rounding decides near-ties of the argmax. Returned as float32 either way."""
    half = _is_half(logits)
    logits = _as_numpy(logits)
    geometry = CaseGeometry.of(props, plans, configuration)
    if tuple(logits.shape[1:]) == geometry.cropped_shape:
        return logits
    out = geometry.to_cropped_grid(logits, "probabilities")
    return np.asarray(np.asarray(out, dtype=np.float16) if half else out, dtype=np.float32)


def segmentation_on_device(logits: torch.Tensor, props: dict, plans: Plans, configuration: ConfigurationPlan,
                           label_manager: LabelManager) -> np.ndarray | None:
    """Resample the logits and take the argmax (or paint regions) where they are (the GPU), so only a small label
    map crosses to the host; None when the plan's resampling has no torch equivalent (then use `convert_logits`)."""
    from longnet.imaging.resampling import resample_logits_torch

    g = CaseGeometry.of(props, plans, configuration)
    kwargs = g.resampling["probabilities"]
    resampled = resample_logits_torch(logits, list(g.cropped_shape), list(g.spacing), list(g.original_spacing),
                                      int(kwargs.get("order", 1)), int(kwargs.get("order_z", 0)),
                                      kwargs.get("force_separate_z"))
    if resampled is None:
        return None
    if logits.dtype == torch.float16:  # as on the numpy path (`resample_logits_to_cropped_shape`)
        resampled = resampled.half().float()
    if label_manager.has_regions:
        seg = torch.zeros(resampled.shape[1:], dtype=torch.int32, device=resampled.device)
        for i, c in enumerate(label_manager.regions_class_order):
            seg[resampled[i] > 0] = c  # sigmoid(x) > 0.5  <=>  x > 0
    else:
        seg = resampled.argmax(0)
    return seg.cpu().numpy().astype(label_dtype(label_manager))


def convert_logits(logits, props: dict, plans: Plans, configuration: ConfigurationPlan, label_manager: LabelManager,
                   return_probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Label map (input geometry, numpy z,y,x order) and optionally the probabilities on the same grid."""
    logits = resample_logits_to_cropped_shape(logits, props, plans, configuration)
    geometry = CaseGeometry.of(props, plans, configuration)
    probs = None
    if return_probabilities:
        probs = apply_nonlinearity(logits, label_manager)
        seg = probabilities_to_segmentation(probs, label_manager)
    else:
        seg = logits_to_segmentation(logits, label_manager)
    seg = geometry.uncrop(seg.astype(label_dtype(label_manager)))
    if probs is not None:
        full = geometry.uncrop(probs)
        if not label_manager.has_regions:  # outside the crop is background with certainty
            outside = geometry.uncrop(np.zeros(probs.shape[1:], dtype=bool), fill=True)
            full[0][outside] = 1.0
        probs = full
    return seg, probs


def export_prediction(logits, props: dict, plans: Plans, configuration: ConfigurationPlan,
                      label_manager: LabelManager, output_file: str | Path,
                      save_probabilities: bool = False, cropped_segmentation: np.ndarray | None = None) -> Path:
    """Write `output_file` (a label map with the input's spacing/origin/direction), plus `<case>.npz`
    (`probabilities`) and `<case>.json` (properties) next to it if asked. Every file is written atomically.
    `cropped_segmentation` (from `segmentation_on_device`) replaces `logits` when no probabilities are saved."""
    output_file = Path(output_file)
    if cropped_segmentation is not None and not save_probabilities:
        seg, probs = CaseGeometry.of(props, plans, configuration).uncrop(cropped_segmentation), None
    else:
        seg, probs = convert_logits(logits, props, plans, configuration, label_manager, save_probabilities)
    # the label map first: a 3D TIFF writer leaves a `{case}.json` spacing sidecar, which the properties below
    # (holding the same `spacing`) then replace, so both readers find what they need in one file
    reader_writer_for_plans(plans).write_seg(seg, output_file, props)  # the format the plans' reader read
    if probs is not None:
        name = output_file.name
        for ending in (".nii.gz", ".nii", ".mha", ".nrrd", ".png", ".bmp", ".tif", ".tiff"):
            if name.endswith(ending):
                name = name[: -len(ending)]
                break
        npz = output_file.with_name(name + ".npz")
        with atomic_path(npz, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, probabilities=probs)
        plain = {k: v for k, v in props.items() if k != "class_locations"}
        save_json(plain, output_file.with_name(name + ".json"))
        save_properties_pickle(plain, output_file.with_name(name + ".pkl"))
    return output_file


def save_properties_pickle(props: dict, dest: str | Path) -> None:
    """`{case}.pkl` next to the probabilities, for nnU-Net's own tools (nnUNetv2_ensemble and
    find_best_configuration read it). Written from plain JSON-compatible data only; longnet never reads it back
    (it reads the `.json` twin), so no pickle is ever loaded."""
    import json
    import pickle

    plain = json.loads(json.dumps(props))  # exactly the JSON-representable content: no objects can slip in
    with atomic_path(dest, suffix=".pkl") as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(plain, f, protocol=4)
