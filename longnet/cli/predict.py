"""`longnet_predict`: label maps from a trained model (longnet's or an nnU-Net v2 model folder)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from longnet.cli.common import HelpFormatter, check_name, cli_main, help_requested
from longnet.errors import LongnetError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_predict", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Predict every case of an input folder ({case}_{CCCC}{ending}, nnU-Net layout) with a trained "
                    "model: sliding window (Gaussian), mirroring TTA, folds averaged, exported in each input's "
                    "geometry. Give either -d/-c (results under $LONGNET_RESULTS) or -m MODEL_FOLDER (also a "
                    "model folder trained by nnU-Net v2).")
    p.add_argument("-i", dest="input", required=True, help="input folder with {case}_{CCCC}{ending} images")
    p.add_argument("-o", dest="output", required=True, help="output folder (created)")
    p.add_argument("-d", dest="dataset", default=None,
                   help="dataset id or DatasetXXX_Name (with -c; default: none, give -m instead)")
    p.add_argument("-c", dest="configuration", default=None,
                   help="configuration, e.g. 3d_fullres (with -d; default: none)")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer name (default nnUNetTrainer)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans name (default nnUNetPlans)")
    p.add_argument("-m", dest="model_folder", default=None,
                   help="model folder (plans.json, dataset.json, fold_N/) instead of -d/-c/-tr/-p (default: none)")
    p.add_argument("-f", dest="folds", nargs="+", default=None,
                   help="folds to ensemble (default: every fold_N with the checkpoint); 'all' = fold_all")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file name inside fold_N (default checkpoint_final.pth)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation (8x faster in 3D)")
    p.add_argument("-step_size", type=float, default=0.5, help="tile step as a fraction of the patch (default 0.5)")
    p.add_argument("-device", "--device", dest="device", default=None, choices=["cpu", "cuda", "mps"],
                   help="default: cuda when available, else cpu")
    p.add_argument("--continue_prediction", "--c", dest="continue_prediction", action="store_true",
                   help="skip cases whose output already exists (outputs are written atomically)")
    p.add_argument("--save_probabilities", action="store_true",
                   help="also write {case}.npz (probabilities) and {case}.json (properties)")
    p.add_argument("-npp", dest="num_preprocessing", type=int, default=1,
                   help="background threads that read and preprocess the next cases (default 1)")
    p.add_argument("-nps", dest="num_export", type=int, default=2, help="background export workers (default 2)")
    p.add_argument("-tile_batch_size", type=int, default=None,
                   help="tiles per step (default: as many as fit ~1M voxels on CPU, ~4M on GPU, mirrored copies "
                        "included)")
    p.add_argument("-accumulation", choices=["fp16", "fp32"], default="fp16",
                   help="precision of the tile sums; fp16 (default) reproduces nnU-Net exactly, fp32 is more precise")
    p.add_argument("-prev_stage_predictions", dest="prev_stage_predictions", default=None,
                   help="cascade (3d_cascade_fullres): folder with the previous stage's predictions "
                        "({case}{file_ending}, e.g. from longnet_predict -c 3d_lowres; default: none)")
    p.add_argument("-num_parts", dest="num_parts", type=int, default=1,
                   help="split the input cases into this many parts (one run per part, e.g. an array job; the "
                        "parts together equal one run; default 1)")
    p.add_argument("-part_id", dest="part_id", type=int, default=0,
                   help="which part this run predicts, 0 .. num_parts-1: sorted cases part_id, part_id + "
                        "num_parts, ... (default 0)")
    p.add_argument("--disable_progress_bar", action="store_true", help="no progress bar (e.g. in log files)")
    p.add_argument("--not_on_device", action="store_true",
                   help="keep the sliding-window sums in host memory instead of on the GPU (large images on "
                        "small GPUs; slower)")
    p.add_argument("--patients", default=None,
                   help="patientsTs.json for longitudinal trainers (ignored by segmentation models; default: none)")
    p.add_argument("--visits", default=None,
                   help="visitsTs.csv (days, scores) for longitudinal trainers (default: none)")
    p.add_argument("--verbose", action="store_true", help="print per-case progress")
    return p


def resolve_model_folder(args: argparse.Namespace) -> Path:
    """-m as given, or $LONGNET_RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIG from -d/-c/-tr/-p."""
    if args.model_folder:
        if args.dataset or args.configuration:
            raise LongnetError("give either -m MODEL_FOLDER or -d ID -c CONFIG, not both")
        folder = Path(args.model_folder)
        if not folder.is_dir():
            raise LongnetError("model folder not found", folder)
        return folder
    if not (args.dataset and args.configuration):
        raise LongnetError("give -m MODEL_FOLDER, or -d DATASET together with -c CONFIGURATION")
    from longnet.paths import dataset_name_from_id, results_root

    for value, flag in ((args.trainer, "-tr"), (args.plans, "-p"), (args.configuration, "-c")):
        check_name(value, flag)
    results = results_root()  # unset: the message names LONGNET_RESULTS, where -d/-c look for the model
    name = dataset_name_from_id(args.dataset)
    folder = results / name / f"{args.trainer}__{args.plans}__{args.configuration}"
    if not folder.is_dir():
        raise LongnetError(f"no trained model for trainer {args.trainer}, plans {args.plans}, configuration "
                           f"{args.configuration}", folder)
    _check_plans_dataset(folder, name)
    return folder


def _check_plans_dataset(folder: Path, dataset_name: str) -> None:
    """A model folder under DatasetXXX_Name must hold that dataset's plans (not ones copied from another)."""
    from longnet.utils.files import load_json

    plans_file = folder / "plans.json"
    if not plans_file.is_file():
        return  # reported by the predictor as 'not a model folder'
    plans = load_json(plans_file)
    other = plans.get("dataset_name") if isinstance(plans, dict) else None
    if other not in (None, dataset_name):
        raise LongnetError(f"plans file belongs to dataset {other!r}, not {dataset_name!r}", plans_file)


def _check_subject_files(args: argparse.Namespace) -> None:
    """--patients / --visits name cases that become output file names: refuse ids that could leave -o."""
    import csv

    from longnet.dataset.raw import validate_case_id
    from longnet.utils.files import load_json

    if args.patients:
        table = load_json(args.patients)
        if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
            raise LongnetError("patients file must map subject -> [case, case, ...]", args.patients)
        for subject, cases in table.items():
            validate_case_id(str(subject), args.patients)
            for c in cases:
                validate_case_id(c if isinstance(c, str) else repr(c), args.patients)
    if args.visits:
        try:
            with open(args.visits, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise LongnetError(f"cannot read visits CSV ({e})", args.visits) from None
        for row in rows:
            if row.get("case") is not None:
                validate_case_id(row["case"].strip(), args.visits)


def _trainer_class(args: argparse.Namespace, folder: Path | None):
    """The registered trainer class behind this prediction, or None for an nnU-Net-trained model folder
    (its trainer names are not registered here: those are segmentation models)."""
    name = args.trainer if not args.model_folder else Path(args.model_folder).name.split("__")[0]
    try:
        from longnet.registry import get_trainer

        return get_trainer(name)
    except LongnetError:
        return None


def _parse(argv) -> tuple[argparse.Namespace, type | None]:
    """Two passes: a trainer with its own prediction task (forecast, classification, embedding) adds its flags.

    The first pass only finds -tr/-m (no required flags, so `-tr X -h` lists X's options with or without -i/-o).
    A trainer is imported only when named (-tr) or implied (-m): the default nnUNetTrainer segments, which
    needs no extra flags, so plain `-h` and default runs parse without importing torch.
    """
    parser = build_parser()
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("-tr", dest="trainer", default=None)
    first.add_argument("-m", dest="model_folder", default=None)
    known, _ = first.parse_known_args(argv)
    cls = None
    if known.trainer is not None or known.model_folder is not None:
        named = known.trainer
        known.trainer = named or "nnUNetTrainer"
        cls = _trainer_class(known, None)
        if cls is None and named and not known.model_folder and help_requested(argv):
            parser.epilog = (f"-tr {named} is not a registered trainer (longnet_plugins lists them): the options above "
                             "are those of segmentation models, e.g. a model folder trained by nnU-Net")
    if cls is not None and getattr(cls, "prediction_task", "segmentation") not in ("segmentation", "none"):
        group = parser.add_argument_group(f"options of {cls.__name__}")
        cls.add_prediction_arguments(group)
    return parser.parse_args(argv), cls


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args, trainer_cls = _parse(argv)  # before the heavy imports: -h and usage errors answer at once
    import torch

    from longnet.inference.predictor import Predictor, list_input_cases

    task = getattr(trainer_cls, "prediction_task", "segmentation") if trainer_cls is not None else "segmentation"
    if task == "none":
        raise LongnetError(f"{trainer_cls.__name__} only pretrains: its checkpoint initialises another trainer "
                           "(see its --help), it predicts nothing")
    folder = resolve_model_folder(args)
    _check_subject_files(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not 0 < args.step_size <= 1:
        raise LongnetError(f"-step_size must be in (0, 1], got {args.step_size}")
    folds = args.folds
    if folds is not None:
        for f in folds:
            if f != "all" and not f.isdigit():
                raise LongnetError(f"invalid fold {f!r} (expected an integer or 'all')")
    if task != "segmentation":
        out = Path(args.output).resolve()
        if out == Path(args.input).resolve():
            raise LongnetError("output folder must differ from the input folder", out)
        if folds is None:
            folds = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / args.checkpoint).is_file())
            if not folds:
                raise LongnetError(f"no fold_*/{args.checkpoint} found", folder)
        trainer_cls.run_prediction(folder, folds, Path(args.input), out, args, torch.device(device))
        return 0
    if args.num_parts < 1 or not 0 <= args.part_id < args.num_parts:
        raise LongnetError(f"-part_id must be in 0 .. num_parts-1 and -num_parts >= 1, got -part_id "
                           f"{args.part_id} -num_parts {args.num_parts}")
    if args.num_preprocessing < 1 or args.num_export < 1:
        raise LongnetError(f"-npp and -nps must be >= 1, got {args.num_preprocessing} and {args.num_export}")
    predictor = Predictor.from_model_folder(
        folder, folds, args.checkpoint, device, use_mirroring=not args.disable_tta, step_size=args.step_size,
        tile_batch_size=args.tile_batch_size, verbose=args.verbose, keep_sums_on_host=args.not_on_device,
        accumulate_dtype=torch.float16 if args.accumulation == "fp16" else torch.float32)
    if predictor.previous_stage and not args.prev_stage_predictions:
        raise LongnetError(f"{predictor.configuration_name} is the second stage of a cascade: give the "
                           f"{predictor.previous_stage} predictions with -prev_stage_predictions DIR")
    if args.prev_stage_predictions and not Path(args.prev_stage_predictions).is_dir():
        raise LongnetError("previous-stage prediction folder not found", args.prev_stage_predictions)
    dj = predictor.dataset_json
    num_channels = len(dj.get("channel_names") or dj.get("modality") or {})
    cases = list_input_cases(args.input, dj.get("file_ending", ".nii.gz"), num_channels)
    out = Path(args.output).resolve()
    if out == Path(args.input).resolve():
        raise LongnetError("output folder must differ from the input folder", out)
    cases = cases[args.part_id::args.num_parts]
    written = predictor.predict_files(cases, out, save_probabilities=args.save_probabilities,
                                      continue_prediction=args.continue_prediction,
                                      num_export_workers=args.num_export,
                                      num_preprocessing_workers=args.num_preprocessing,
                                      previous_stage_folder=args.prev_stage_predictions,
                                      progress_bar=not args.disable_progress_bar)
    print(f"predicted {len(written)} case(s) into {out}" +
          (f" ({len(cases) - len(written)} already present)" if len(written) < len(cases) else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
