"""longnet's public API for plugins: everything a trainer, planner or task package may import.

Plugins import from here only (`from longnet.api import Trainer, Requirements, ModelFolder`); everything else in
longnet is internal and may change between versions. A test enforces it for the in-tree plugins and the examples.
Names resolve lazily (PEP 562), so importing this module costs nothing until a name is used.

Sections: trainer contract, options, model folders and tasks, checkpoints, plans and networks, data and
samplers, augmentation, image IO and preprocessing, inference, evaluation helpers, demo recipes.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    # trainer contract (docs/plugin_api.md lists the hooks in call order)
    "longnet.training.trainer": ("Trainer", "TrainingInterrupted"),
    "longnet.training.segmentation": ("nnUNetTrainer",),
    "longnet.training.segmentation_options": ("SegmentationOptions",),
    "longnet.training.representation": ("RepresentationTrainer", "CaseInputs", "VolumeInput", "resize_volume"),
    "longnet.io.visits": ("read_visits_csv", "visit_days", "subjects_for_cases"),
    "longnet.training.requirements": ("Requirements",),
    "longnet.training.distributed": ("split_batch",),
    "longnet.training.schedulers": ("WarmupCosineScheduler",),
    # options
    "longnet.training.options": ("option", "parse_options", "OptionRange", "POSITIVE_INT", "POSITIVE_FLOAT",
                                 "NON_NEGATIVE_INT", "NON_NEGATIVE_FLOAT"),
    # model folders, output tasks, errors
    "longnet.io.model_folder": ("ModelFolder", "ModelName"),
    "longnet.tasks": ("OutputTask", "get_task"),
    "longnet.errors": ("LongnetError",),
    # checkpoints
    "longnet.io.checkpoints": ("load_checkpoint", "strip_prefixes", "unwrap"),
    # plans, labels, networks
    "longnet.planning.plans": ("Plans",),
    "longnet.dataset.labels": ("LabelManager",),
    "longnet.planning.network": ("architecture_with_overrides", "build_network_from_architecture",
                                 "output_stage_prefixes"),
    # data and samplers
    "longnet.data.cases": ("CaseReader", "bbox_for_patch", "crop_and_pad"),
    "longnet.data.loader": ("default_num_workers",),
    "longnet.data.longitudinal": ("LongitudinalIndex",),
    "longnet.data.longitudinal_sampling": ("PairDraw", "SequenceDraw", "IntraSubjectPairSampler", "SequenceSampler",
                                           "SubjectBatchSampler", "fill_sparse", "frozen_draws", "frozen_draws_path"),
    "longnet.data.longitudinal_geometry": ("random_crop_aligned", "paired_spatial_augment"),
    "longnet.data.segmentation": ("SegmentationPatchSampler", "foreground_flags"),
    "longnet.data.cascade": ("one_hot",),
    # augmentation
    "longnet.data.augmentation": ("SpatialAugConfig", "spatial_aug_config", "enlarged_patch_size", "replay",
                                  "training_transforms", "validation_transforms"),
    # image IO and preprocessing
    "longnet.dataset.io": ("read_image_files", "write_image", "geometry_mismatch"),
    "longnet.dataset.raw": ("validate_case_id",),
    "longnet.dataset.reader_choice": ("reader_writer_for_plans",),
    "longnet.utils.files": ("atomic_path", "load_json", "save_json"),
    "longnet.paths": ("preprocessed_root",),
    "longnet.preprocessing.preprocessor": ("preprocess_case",),
    "longnet.preprocessing.alignment": ("alignment_mode", "align_visit", "stored_transform_between"),
    "longnet.imaging.cropping": ("union_bbox",),
    "longnet.imaging.resampling": ("resample_data_or_seg_to_shape",),
    # inference
    "longnet.inference.predictor": ("Predictor", "list_input_cases"),
    "longnet.inference.sliding_window": ("predict_sliding_window",),
    "longnet.inference.export": ("export_prediction", "logits_to_segmentation"),
    "longnet.imaging.case_geometry": ("CaseGeometry",),
    "longnet.inference.embeddings": ("save_embeddings", "plot_trajectories"),
    # evaluation helpers
    "longnet.evaluation.classification": ("classification_metrics",),
    "longnet.evaluation.change": ("CHANGE_CLASSES", "change_class", "change_targets", "consecutive_pairs"),
    "longnet.evaluation.image": ("forecast_comparison",),
    # demo recipes (a plugin's `longnet.demo_recipes` entry)
    "longnet.demo.recipes": ("DemoContext", "RecipeResult", "call_command", "aligned_plans", "CONFIG"),
    "longnet.demo.segmentation": ("find_progress_png", "foreground_dice_from_summary"),
    "longnet.demo.synthetic": ("CONVERTER_HORIZON_DAYS",),
}

_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"longnet.api has no {name!r} (the public API is longnet.api.__all__)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return __all__
