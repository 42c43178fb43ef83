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


def resolve_model_folder(args: argparse.Namespace):
    """-m as given, or $LONGNET_RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIG from -d/-c/-tr/-p."""
    from longnet.io.model_folder import ModelFolder

    if args.model_folder:
        if args.dataset or args.configuration:
            raise LongnetError("give either -m MODEL_FOLDER or -d ID -c CONFIG, not both")
        return ModelFolder(args.model_folder)
    if not (args.dataset and args.configuration):
        raise LongnetError("give -m MODEL_FOLDER, or -d DATASET together with -c CONFIGURATION")
    for value, flag in ((args.trainer, "-tr"), (args.plans, "-p"), (args.configuration, "-c")):
        check_name(value, flag)
    model = ModelFolder.from_names(args.dataset, args.trainer, args.plans, args.configuration)
    _check_plans_dataset(model)
    return model


def _check_plans_dataset(model) -> None:
    """A model folder under DatasetXXX_Name must hold that dataset's plans (not ones copied from another)."""
    if not (model.path / "plans.json").is_file():
        return  # reported by the predictor as 'not a model folder'
    other = model.plans.get("dataset_name")
    if other not in (None, model.dataset_folder_name):
        raise LongnetError(f"plans file belongs to dataset {other!r}, not {model.dataset_folder_name!r}",
                           model.path / "plans.json")


def _check_subject_files(args: argparse.Namespace) -> None:
    """--patients / --visits name cases that become output file names: refuse ids that could leave -o."""
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
        from longnet.io.visits import read_visit_rows

        for _, row in read_visit_rows(args.visits):
            if row.get("case") is not None:
                validate_case_id(row["case"].strip(), args.visits)


def _trainer_class(name: str) -> type | None:
    """The registered trainer class of that name, or None (e.g. a model folder trained by nnU-Net, whose trainer
    names are not registered here: those are segmentation models)."""
    from longnet.registry import get_trainer

    try:
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
        from longnet.io.model_folder import ModelName

        named = known.trainer
        name = ModelName.of_folder(known.model_folder).trainer if known.model_folder else named
        cls = _trainer_class(name or "nnUNetTrainer")
        if cls is None and named and not known.model_folder and help_requested(argv):
            parser.epilog = (f"-tr {named} is not a registered trainer (longnet_plugins lists them): the options above "
                             "are those of segmentation models, e.g. a model folder trained by nnU-Net")
    if cls is not None and cls.prediction_task != "segmentation":
        group = parser.add_argument_group(f"options of {cls.__name__}")
        cls.add_prediction_arguments(group)
    return parser.parse_args(argv), cls


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args, trainer_cls = _parse(argv)  # before the heavy imports: -h and usage errors answer at once
    import torch

    if trainer_cls is None:  # unregistered names (nnU-Net's model folders) are segmentation models
        from longnet.training.segmentation import nnUNetTrainer as trainer_cls
    from longnet.tasks import get_task

    get_task(trainer_cls.prediction_task)  # a trainer may only name a registered task
    if trainer_cls.prediction_task == "none":  # answered before any file is looked at
        trainer_cls.run_prediction(None, None, Path(args.input), Path(args.output), args, torch.device("cpu"))
    model = resolve_model_folder(args)
    _check_subject_files(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not 0 < args.step_size <= 1:
        raise LongnetError(f"-step_size must be in (0, 1], got {args.step_size}")
    folds = [str(f) for f in args.folds] if args.folds is not None else None
    model.checkpoint_paths(folds, args.checkpoint)  # every fold has the checkpoint, or one clear error
    out = Path(args.output).resolve()
    if out == Path(args.input).resolve():
        raise LongnetError("output folder must differ from the input folder", out)
    trainer_cls.run_prediction(model, folds, Path(args.input), out, args, torch.device(device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
