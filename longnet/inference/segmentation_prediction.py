"""`longnet_predict` for segmentation models: label maps of every input case (nnU-Net's predictor flags)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from longnet.errors import LongnetError

if TYPE_CHECKING:
    from longnet.io.model_folder import ModelFolder


def predict_segmentation(model: "ModelFolder", folds: Sequence[str] | None, input_folder: Path,
                         output_folder: Path, args: argparse.Namespace, device: torch.device,
                         trainer_cls: type | None = None) -> None:
    """Sliding window, mirroring, folds averaged, exported in each input's geometry (see `Predictor`)."""
    from longnet.inference.predictor import Predictor, list_input_cases

    if args.num_parts < 1 or not 0 <= args.part_id < args.num_parts:
        raise LongnetError(f"-part_id must be in 0 .. num_parts-1 and -num_parts >= 1, got -part_id "
                           f"{args.part_id} -num_parts {args.num_parts}")
    if args.num_preprocessing < 1 or args.num_export < 1:
        raise LongnetError(f"-npp and -nps must be >= 1, got {args.num_preprocessing} and {args.num_export}")
    predictor = Predictor.from_model_folder(
        model.path, folds, args.checkpoint, device, use_mirroring=not args.disable_tta, step_size=args.step_size,
        tile_batch_size=args.tile_batch_size, verbose=args.verbose, keep_sums_on_host=args.not_on_device,
        accumulate_dtype=torch.float16 if args.accumulation == "fp16" else torch.float32, trainer_cls=trainer_cls)
    if predictor.previous_stage and not args.prev_stage_predictions:
        raise LongnetError(f"{predictor.configuration_name} is the second stage of a cascade: give the "
                           f"{predictor.previous_stage} predictions with -prev_stage_predictions DIR")
    if args.prev_stage_predictions and not Path(args.prev_stage_predictions).is_dir():
        raise LongnetError("previous-stage prediction folder not found", args.prev_stage_predictions)
    dj = predictor.dataset_json
    num_channels = len(dj.get("channel_names") or dj.get("modality") or {})
    cases = list_input_cases(input_folder, dj.get("file_ending", ".nii.gz"), num_channels)
    cases = cases[args.part_id::args.num_parts]
    written = predictor.predict_files(cases, output_folder, save_probabilities=args.save_probabilities,
                                      continue_prediction=args.continue_prediction,
                                      num_export_workers=args.num_export,
                                      num_preprocessing_workers=args.num_preprocessing,
                                      previous_stage_folder=args.prev_stage_predictions,
                                      progress_bar=not args.disable_progress_bar)
    print(f"predicted {len(written)} case(s) into {output_folder}" +
          (f" ({len(cases) - len(written)} already present)" if len(written) < len(cases) else ""))
