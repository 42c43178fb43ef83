"""`longnet_evaluate_simple` and `longnet_evaluate_folder`: summary.json in exactly nnU-Net's schema."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from longnet.cli.common import cli_main
from longnet.errors import LongnetError
from longnet.utils.parallel import default_num_processes


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("gt_folder", help="folder with the reference segmentations")
    p.add_argument("pred_folder", help="folder with the predicted segmentations")
    p.add_argument("-o", dest="output", default=None, help="summary file; None: PRED_FOLDER/summary.json")
    p.add_argument("-np", dest="num_processes", type=int, default=default_num_processes(), help="worker processes")
    p.add_argument("--chill", action="store_true", help="evaluate only the references that have a prediction "
                   "(else a missing prediction is an error)")


def build_simple_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_evaluate_simple", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Dice, IoU, TP, FP, FN, TN, n_pred, n_ref per label and case -> summary.json (nnU-Net's "
                    "schema). The file ending is that of the first reference file.")
    _add_common(p)
    p.add_argument("-l", dest="labels", type=int, nargs="+", required=True, help="labels to evaluate")
    p.add_argument("-il", dest="ignore_label", type=int, default=None,
                   help="ignore label: reference voxels with it are excluded")
    return p


def build_folder_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_evaluate_folder", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    from longnet.dataset.io import file_ending_of
    from longnet.dataset.reader_choice import reader_writer_for_file
    from longnet.evaluation.nnunet_summary import foreground_dice, write_summary
    from longnet.evaluation.segmentation import evaluate_folders

    args = build_simple_parser().parse_args(argv)
    gt = Path(args.gt_folder)
    if not gt.is_dir():
        raise LongnetError("folder not found", gt)
    first = next((p for p in sorted(gt.iterdir()) if p.is_file() and not p.name.startswith(".")), None)
    if first is None:
        raise LongnetError("no reference files", gt)
    ending = file_ending_of(first)
    rw = reader_writer_for_file(first, ending)
    summary = evaluate_folders(gt, args.pred_folder, args.labels, ending, args.ignore_label, args.num_processes,
                               compute_hd95=False, allow_missing=args.chill, nnunet_schema=True,
                               reader_writer=rw.name)
    out = _output(args)
    write_summary(summary, out)
    print(f"wrote {out} (mean foreground Dice {foreground_dice(summary):.4f})")
    return 0


@cli_main
def main_folder(argv: Sequence[str] | None = None) -> int:
    from longnet.dataset.folder_setup import folder_setup
    from longnet.evaluation.nnunet_summary import evaluate_to_summary, foreground_dice

    args = build_folder_parser().parse_args(argv)
    setup = folder_setup(args.pred_folder, args.pfile, args.djfile)
    out = _output(args)
    summary = evaluate_to_summary(args.gt_folder, args.pred_folder, setup.dataset_json, out, args.num_processes,
                                  chill=args.chill, reader_writer=setup.reader_writer.name)
    print(f"wrote {out} (mean foreground Dice {foreground_dice(summary):.4f})")
    return 0
