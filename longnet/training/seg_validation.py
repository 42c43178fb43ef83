"""Full-image validation at the end of segmentation training → `fold_N/validation/`, as nnU-Net does it.

Every validation case is predicted with `longnet.inference.predictor.Predictor` (sliding window, Gaussian,
mirroring) and exported in its original geometry; `summary.json` is then computed on those exported files against
`gt_segmentations/`, so its numbers equal `longnet_evaluate_simple` / nnU-Net's evaluator on the same folders.
With `--npz` the probabilities (`{case}.npz`) and properties (`{case}.json`, `{case}.pkl`) are written too, which is
what ensembling and `longnet_find_best_configuration` read. A configuration with a `next_stage` (3d_lowres) also
writes the cascade's input: `predicted_next_stage/<next>/{case}.b2nd` on the next stage's preprocessed grid.

Cases without original geometry (datasets written straight into the preprocessed folder) or registered to another
visit (`--align`) are scored on the preprocessed grid instead, and the summary says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from longnet.data.cases import CaseReader
from longnet.utils.files import save_json


def case_metrics(logits: torch.Tensor, seg: np.ndarray, label_manager) -> dict[str, dict]:
    """Metrics of one case on the preprocessed grid (seg -1 counts as background)."""
    from longnet.evaluation.segmentation import key_of, overlap_metrics

    ref_lab = np.where(seg[0] < 0, 0, seg[0])
    mask = None
    if label_manager.ignore_label is not None:
        mask = ref_lab != label_manager.ignore_label
    out: dict[str, dict] = {}
    if label_manager.has_regions:
        probs = torch.sigmoid(logits.float()).numpy() > 0.5
        for i, region in enumerate(label_manager.foreground_regions):
            out[key_of(region)] = overlap_metrics(probs[i], np.isin(ref_lab, np.atleast_1d(region)), mask)
    else:
        pred = logits.argmax(0).numpy()
        for lab in label_manager.foreground_labels:
            out[key_of(lab)] = overlap_metrics(pred == lab, ref_lab == lab, mask)
    return out


def summarize(per_case: list[dict]) -> dict[str, Any]:
    """nnU-Net's summary.json layout: foreground_mean, mean (per label), metric_per_case."""
    from longnet.evaluation.segmentation import aggregate

    return {**aggregate(per_case, with_median=False), "metric_per_case": per_case}


def _exportable(props: dict, gt_dir: Path) -> bool:
    """Original geometry known and the case not resampled onto another visit's grid."""
    aligned = (props.get("alignment") or {}).get("reference_case")
    return gt_dir.is_dir() and "spacing" in props and "shape_before_cropping" in props and not aligned


def next_stage_folder(trainer) -> Path | None:
    """`<model folder>/predicted_next_stage/<next configuration>` for a configuration with a next stage."""
    nxt = trainer.configuration_manager.get("next_stage")
    if nxt is None or trainer.output_folder is None:
        return None
    nxt = nxt[0] if isinstance(nxt, (list, tuple)) else nxt
    return trainer.output_folder.parent / "predicted_next_stage" / nxt


def write_next_stage(trainer, case: str, logits: torch.Tensor, props: dict, dest_folder: Path) -> bool:
    """Resample this stage's logits onto the next stage's preprocessed array of `case` and store the argmax
    there (nnU-Net: probability resampling with this stage's spacing as both source and target spacing)."""
    from longnet.inference.export import label_dtype, logits_to_segmentation
    from longnet.imaging.resampling import resample_data_or_seg_to_shape
    from longnet.io.storage import save_array

    nxt_name = dest_folder.name
    nxt_conf = trainer.plans.configuration(nxt_name)
    target = trainer.preprocessed_dataset_folder / nxt_conf.data_identifier / f"{case}.b2nd"
    if not target.is_file():
        trainer.print(f"predicted_next_stage: {target} not found (run longnet_preprocess -c {nxt_name}); "
                      f"{case} skipped")
        return False
    from longnet.data.cases import open_array

    shape = list(open_array(target).shape[1:])
    conf = trainer.configuration_manager
    kwargs = dict(conf.get("resampling_fn_probabilities_kwargs") or {"order": 1, "order_z": 0,
                                                                         "force_separate_z": None})
    kwargs["is_seg"] = False
    spacing = list(conf.spacing)
    resampled = resample_data_or_seg_to_shape(logits.float().numpy(), shape, spacing, spacing, **kwargs)
    if logits.dtype == torch.float16:  # nnU-Net resamples its float16 logits into float16 (near-ties of the argmax)
        resampled = np.asarray(resampled, dtype=np.float16)
    seg = logits_to_segmentation(np.asarray(resampled, dtype=np.float32), trainer.label_manager)
    dest_folder.mkdir(parents=True, exist_ok=True)
    save_array(seg.astype(label_dtype(trainer.label_manager))[None], dest_folder / f"{case}.b2nd",
               conf.patch_size)
    return True


def run_final_validation(trainer) -> Path:
    """Predict the trainer's labelled validation cases into `validation/` and write `summary.json` (rank 0)."""
    from longnet.evaluation.nnunet_summary import evaluate_to_summary
    from longnet.inference.export import export_prediction
    from longnet.inference.predictor import Predictor

    val_dir = trainer.output_folder / "validation"
    val_dir.mkdir(parents=True, exist_ok=True)
    cases = trainer._labelled_cases(trainer.val_cases)
    if len(cases) < len(trainer.val_cases):
        trainer.print(f"final validation: {len(cases)} labelled of {len(trainer.val_cases)} validation cases "
                      f"({len(trainer.val_cases) - len(cases)} without labels are skipped)")
    predictor = Predictor.from_trainer(trainer, use_mirroring=not trainer.opts.no_validation_mirroring)
    reader = CaseReader(trainer.data_folder)
    gt_dir = trainer.preprocessed_dataset_folder / "gt_segmentations"
    ending = trainer.dataset_json.get("file_ending", ".nii.gz")
    save_npz = bool(trainer.options.get("npz"))
    next_folder = next_stage_folder(trainer)
    lm = trainer.label_manager
    grid_metrics, exported = [], 0
    for case in cases:
        data, seg, props = reader.load(case)
        logits = predictor.predict_preprocessed(trainer.network_input(case, data, props, train=False))
        # exported as float16 when the tile sums are (nnU-Net's export rounds its resampled logits alike)
        exported_logits = logits.half() if predictor.accumulate_dtype == torch.float16 else logits
        if _exportable(props, gt_dir):
            export_prediction(exported_logits, props, trainer.plans, trainer.configuration_manager, lm,
                              val_dir / f"{case}{ending}", save_npz)
            exported += 1
        else:
            grid_metrics.append({"reference_file": case, "prediction_file": None,
                                 "metrics": case_metrics(logits, seg, lm)})
        if next_folder is not None:
            write_next_stage(trainer, case, exported_logits, props, next_folder)
        trainer.print(f"validation {case}: predicted")
    if exported and not grid_metrics:
        summary = evaluate_to_summary(gt_dir, val_dir, trainer.dataset_json, val_dir / "summary.json",
                                      reader_writer=trainer.plans.plans.get("image_reader_writer"))
    else:
        summary = summarize(grid_metrics)
        summary["note"] = "metrics computed on the preprocessed grid of the validation cases"
        save_json(summary, val_dir / "summary.json", sort_keys=True)
    for entry in summary["metric_per_case"]:
        trainer.print(f"validation {Path(str(entry['reference_file'])).name}: " + ", ".join(
            f"{k} Dice {v['Dice']:.4f}" for k, v in entry["metrics"].items()))
    trainer.print(f"final validation on {len(cases)} case(s): {_dice_line(summary, lm)}")
    return val_dir / "summary.json"


def _dice_line(summary: dict, label_manager) -> str:
    """The mean foreground Dice, and why it is undefined when it is: nnU-Net's mean is NaN as soon as one label
    is absent from every validation case (its Dice is undefined there), so the defined labels' mean follows."""
    fg = summary["foreground_mean"].get("Dice", float("nan"))
    means = {k: v.get("Dice", float("nan")) for k, v in summary.get("mean", {}).items()}
    undefined = [k for k, v in means.items() if v != v]
    if fg == fg or not undefined:
        return f"mean foreground Dice {fg:.4f}"
    names = {str(v): k for k, v in label_manager.labels.items() if isinstance(v, int)}
    absent = ", ".join(f"{k} ({names[k]})" if k in names else k for k in undefined)
    defined = [v for v in means.values() if v == v]
    rest = f"; mean over the other labels {sum(defined) / len(defined):.4f}" if defined else ""
    return (f"mean foreground Dice nan: label {absent} is in neither reference nor prediction of any validation "
            f"case (Dice undefined, as in nnU-Net's summary){rest}")
