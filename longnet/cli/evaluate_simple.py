"""`longnet_evaluate_simple` and `longnet_evaluate_folder`: summary.json in exactly nnU-Net's schema."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from longnet.cli.common import HelpFormatter, cli_main
from longnet.errors import LongnetError
from longnet.utils.parallel import default_num_processes


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("gt_folder", help="folder with the reference segmentations")
    p.add_argument("pred_folder", help="folder with the predicted segmentations")
    p.add_argument("-o", dest="output", default=None, help="summary file (default: PRED_FOLDER/summary.json)")
    p.add_argument("-np", dest="num_processes", type=int, default=default_num_processes(), help="worker processes")
    p.add_argument("--chill", action="store_true", help="evaluate only the references that have a prediction "
                   "(else a missing prediction is an error)")


def build_simple_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_evaluate_simple", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Dice, IoU, TP, FP, FN, TN, n_pred, n_ref per label and case -> summary.json (nnU-Net's "
                    "schema). The file ending is that of the first reference file. With a dataset.json in PRED_FOLDER "
                    "(longnet_predict writes one), a label value it does not declare is an error.")
    _add_common(p)
    p.add_argument("-l", dest="labels", type=int, nargs="+", required=True, help="labels to evaluate")
    p.add_argument("-il", dest="ignore_label", type=int, default=None,
                   help="ignore label: reference voxels with it are excluded (default: none)")
    return p


def build_folder_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_evaluate_folder", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Evaluate with the labels/regions and ignore label of a dataset.json -> summary.json "
                    "(nnU-Net's schema).")
    _add_common(p)
    p.add_argument("-djfile", required=True, help="dataset.json (labels, regions, ignore label, file_ending)")
    p.add_argument("-pfile", required=True, help="plans file (names the image reader/writer)")
    return p


def _output(args: argparse.Namespace) -> Path:
    return Path(args.output) if args.output else Path(args.pred_folder) / "summary.json"


@cli_main
def main_simple(argv: Sequence[str] | None = None) -> int:
    args = build_simple_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.dataset.io import file_ending_of
    from longnet.dataset.reader_choice import reader_writer_for_file
    from longnet.evaluation.input_checks import check_folders, check_output
    from longnet.evaluation.nnunet_summary import foreground_dice, write_summary
    from longnet.evaluation.segmentation import evaluate_folders

    gt = Path(args.gt_folder)
    if not gt.is_dir():
        raise LongnetError("folder not found", gt)
    if Path(args.pred_folder).is_dir():
        check_folders(gt, args.pred_folder)
    check_output(_output(args), gt)
    first = next((p for p in sorted(gt.iterdir()) if p.is_file() and not p.name.startswith(".")), None)
    if first is None:
        raise LongnetError("no reference files", gt)
    ending = file_ending_of(first)
    rw = reader_writer_for_file(first, ending)
    summary = evaluate_folders(gt, args.pred_folder, args.labels, ending, args.ignore_label, args.num_processes,
                               compute_hd95=False, allow_missing=args.chill, nnunet_schema=True,
                               reader_writer=rw.name, allowed_values=_declared_values(args))
    out = _output(args)
    write_summary(summary, out)
    print(f"wrote {out} (mean foreground Dice {foreground_dice(summary):.4f})")
    return 0


def _declared_values(args: argparse.Namespace) -> set[int] | None:
    """Label values declared by the dataset.json that longnet_predict (like nnU-Net) leaves next to its predictions,
    plus the -l labels and -il ignore label; None without such a file: -l alone does not say which values exist."""
    from longnet.dataset.labels import LabelManager
    from longnet.utils.files import load_json

    dj = Path(args.pred_folder) / "dataset.json"
    if not dj.is_file():
        return None
    values = set(LabelManager.from_dataset_json(load_json(dj), str(dj)).valid_values) | set(args.labels)
    return values | ({args.ignore_label} if args.ignore_label is not None else set())


@cli_main
def main_folder(argv: Sequence[str] | None = None) -> int:
    args = build_folder_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.dataset.folder_setup import folder_setup
    from longnet.evaluation.input_checks import check_folders, check_output
    from longnet.evaluation.nnunet_summary import evaluate_to_summary, foreground_dice

    setup = folder_setup(args.pred_folder, args.pfile, args.djfile)
    out = _output(args)
    if Path(args.gt_folder).is_dir() and Path(args.pred_folder).is_dir():
        check_folders(args.gt_folder, args.pred_folder)
    check_output(out, args.gt_folder)
    summary = evaluate_to_summary(args.gt_folder, args.pred_folder, setup.dataset_json, out, args.num_processes,
                                  chill=args.chill, reader_writer=setup.reader_writer.name)
    print(f"wrote {out} (mean foreground Dice {foreground_dice(summary):.4f})")
    return 0
