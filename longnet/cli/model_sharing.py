"""`longnet_export_model_to_zip` / `longnet_install_pretrained_model_from_zip`: trained models as zip files that
nnU-Net v2's commands of the same names read and write too."""
from __future__ import annotations

import argparse
from typing import Sequence

from longnet.cli.common import HelpFormatter, check_name, cli_main
from longnet.errors import LongnetError
from longnet.model_sharing.export import DEFAULT_CHECKPOINTS, DEFAULT_CONFIGURATIONS, DEFAULT_FOLDS


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_export_model_to_zip", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Write a trained model (checkpoints, plans, dataset.json, fingerprint, validation summaries, "
                    "matching ensembles and inference information) from $LONGNET_RESULTS into a zip that "
                    "longnet_install_pretrained_model_from_zip or nnUNetv2_install_pretrained_model_from_zip installs.")
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("-o", dest="output", required=True, help="zip file to write")
    p.add_argument("-c", dest="configurations", nargs="+", default=list(DEFAULT_CONFIGURATIONS),
                   help="configurations to export; each must have a trained model folder "
                        f"(default: {' '.join(DEFAULT_CONFIGURATIONS)})")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer name (default %(default)s)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default %(default)s)")
    p.add_argument("-f", dest="folds", nargs="+", default=list(DEFAULT_FOLDS),
                   help="folds to export ('all' = fold_all); each fold folder must exist "
                        f"(default: {' '.join(DEFAULT_FOLDS)})")
    p.add_argument("-chk", dest="checkpoints", nargs="+", default=list(DEFAULT_CHECKPOINTS),
                   help=f"checkpoint files to export from every fold (default: {' '.join(DEFAULT_CHECKPOINTS)})")
    p.add_argument("--not_strict", action="store_true",
                   help="accepted for nnU-Net compatibility; like nnU-Net 2.8.1 it changes nothing (every listed "
                        "configuration and fold must exist; default: off)")
    p.add_argument("--exp_cv_preds", action="store_true",
                   help="also export the validation predictions (every validation/ file except .npz/.pkl) and the "
                        "whole cross-validation and ensemble folders (default: off)")
    return p


def build_install_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_install_pretrained_model_from_zip", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Extract a model zip (from longnet_export_model_to_zip or nnU-Net) into $LONGNET_RESULTS "
                    "(fallback nnUNet_results). Zips with members that would land outside it (absolute paths, "
                    "'..', symbolic links) are refused before anything is written.")
    p.add_argument("zip", help="model zip file")
    return p


def _check_folds(folds: Sequence[str]) -> None:
    for f in folds:
        if f != "all" and not f.isdigit():
            raise LongnetError(f"invalid fold {f!r} (expected an integer or 'all')")


@cli_main
def main_export(argv: Sequence[str] | None = None) -> int:
    args = build_export_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.model_sharing.export import collect_model_files, write_model_zip
    from longnet.paths import dataset_name_from_id, results_root

    check_name(args.trainer, "-tr")
    check_name(args.plans, "-p")
    for c in args.configurations:
        check_name(c, "-c")
    for chk in args.checkpoints:
        check_name(chk, "-chk")
    _check_folds(args.folds)
    results = results_root()
    name = dataset_name_from_id(args.dataset)
    files = collect_model_files(results, name, args.configurations, args.trainer, args.plans, args.folds,
                                args.checkpoints, args.exp_cv_preds)
    dest = write_model_zip(files, results, args.output)
    print(f"exported {len(files)} file(s) of {name} ({', '.join(args.configurations)}) to {dest}")
    return 0


@cli_main
def main_install(argv: Sequence[str] | None = None) -> int:
    args = build_install_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.model_sharing.install import install_model_zip
    from longnet.paths import results_root

    results = results_root()
    installed = install_model_zip(args.zip, results)
    models = sorted({p.relative_to(results).parts[:2] for p in installed if len(p.relative_to(results).parts) > 2})
    print(f"installed {len(installed)} file(s) into {results}" +
          "".join(f"\n  {'/'.join(m)}" for m in models))
    return 0
