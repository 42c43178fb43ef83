"""`longnet_accumulate_crossval_results` and `longnet_find_best_configuration` (nnU-Net's flags)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from longnet.cli.common import HelpFormatter, check_name, cli_main
from longnet.errors import LongnetError
from longnet.utils.parallel import default_num_processes

DEFAULT_CONFIGS = ["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"]
DEFAULT_FOLDS = [0, 1, 2, 3, 4]


def build_accumulate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_accumulate_crossval_results", allow_abbrev=False,
        formatter_class=HelpFormatter,
        description="Merge the validation predictions of a model's folds into one folder and evaluate them "
                    "(summary.json against RAW labelsTr, else PRE gt_segmentations).")
    p.add_argument("dataset", help="dataset id or DatasetXXX_Name")
    p.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    p.add_argument("-o", dest="output", default=None,
                   help="output folder, empty or absent (default: MODEL/crossval_results_folds_<folds>)")
    p.add_argument("-f", dest="folds", type=int, nargs="+", default=DEFAULT_FOLDS, help="folds to merge")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans name")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer name")
    return p


def build_find_best_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_find_best_configuration", allow_abbrev=False,
        formatter_class=HelpFormatter,
        description="Score every trained configuration (and every pair ensemble) by cross-validation, pick the "
                    "best, determine its postprocessing and write inference_information.json and "
                    "inference_instructions.txt into RES/<dataset>/. With patientsTr.json in the raw dataset, "
                    "each candidate's longitudinal consistency (ASPC) is reported next to its Dice.")
    p.add_argument("dataset", help="dataset id or DatasetXXX_Name")
    p.add_argument("-p", dest="plans", nargs="+", default=["nnUNetPlans"], help="plans names")
    p.add_argument("-c", dest="configurations", nargs="+", default=DEFAULT_CONFIGS,
                   help="configurations (those the plans do not define are skipped)")
    p.add_argument("-tr", dest="trainers", nargs="+", default=["nnUNetTrainer"], help="trainer names")
    p.add_argument("-f", dest="folds", type=int, nargs="+", default=DEFAULT_FOLDS, help="folds")
    p.add_argument("-np", dest="num_processes", type=int, default=default_num_processes(), help="worker processes")
    p.add_argument("--disable_ensembling", action="store_true", help="do not try pair ensembles")
    p.add_argument("--no_overwrite", action="store_true",
                   help="reuse merged cross-validation folders and ensembled label maps already written")
    return p


@cli_main
def main_accumulate(argv: Sequence[str] | None = None) -> int:
    args = build_accumulate_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.workflow.crossval import accumulate_cv_results, crossval_folder
    from longnet.evaluation.nnunet_summary import foreground_dice
    from longnet.paths import dataset_name_from_id, results_root

    name = dataset_name_from_id(args.dataset)
    model = results_root() / name / "__".join(check_name(v, f) for v, f in (
        (args.trainer, "-tr"), (args.plans, "-p"), (args.configuration, "-c")))
    if not model.is_dir():
        raise LongnetError("model folder not found (train the model first)", model)
    out = Path(args.output) if args.output else crossval_folder(model, args.folds)
    if args.output and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LongnetError("-o must be an empty or absent folder", out)
    summary = accumulate_cv_results(model, out, args.folds, default_num_processes(), overwrite=True,
                                    dataset_name=name)
    print(f"wrote {out} (mean foreground Dice {foreground_dice(summary):.4f})")
    return 0


@cli_main
def main_find_best(argv: Sequence[str] | None = None) -> int:
    args = build_find_best_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.workflow.find_best import find_best_configuration, models_to_consider
    from longnet.paths import dataset_name_from_id

    for flag, values in (("-tr", args.trainers), ("-p", args.plans), ("-c", args.configurations)):
        for v in values:
            check_name(v, flag)
    name = dataset_name_from_id(args.dataset)
    models = models_to_consider(name, args.trainers, args.configurations, args.plans)
    find_best_configuration(name, models, not args.disable_ensembling, args.num_processes,
                            overwrite=not args.no_overwrite, folds=args.folds)
    return 0
