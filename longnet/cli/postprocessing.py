"""`longnet_determine_postprocessing` and `longnet_apply_postprocessing` (nnU-Net's flags)."""
from __future__ import annotations

import argparse
from typing import Sequence

from longnet.cli.common import HelpFormatter, cli_main
from longnet.utils.parallel import default_num_processes


def _add_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("-plans_json", default=None,
                   help="plans file naming the image reader/writer (default: plans.json in -i if present, "
                        "else chosen from the file ending)")
    p.add_argument("-dataset_json", default=None, help="dataset.json with labels and file_ending "
                   "(default: dataset.json in -i)")
    p.add_argument("-np", dest="num_processes", type=int, default=default_num_processes(), help="worker processes")


def build_determine_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_determine_postprocessing", allow_abbrev=False,
        formatter_class=HelpFormatter,
        description="Decide by nnU-Net's rule whether keeping only the largest connected component (of the "
                    "whole foreground, then of each label/region) improves Dice against the references. Writes "
                    "postprocessing.json and postprocessing.pkl into -i and the postprocessed predictions into "
                    "-i/postprocessed/.")
    p.add_argument("-i", dest="input", required=True, help="folder with predictions (e.g. crossval_results_folds_*)")
    p.add_argument("-ref", dest="ref", required=True, help="folder with the reference segmentations")
    _add_setup(p)
    p.add_argument("--remove_postprocessed", action="store_true",
                   help="do not keep -i/postprocessed/ (only the decisions)")
    return p


def build_apply_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_apply_postprocessing", allow_abbrev=False,
        formatter_class=HelpFormatter,
        description="Apply the postprocessing decided by longnet_determine_postprocessing to every label map of "
                    "-i, writing them under the same names to -o (nothing else is copied).")
    p.add_argument("-i", dest="input", required=True, help="folder with predicted label maps")
    p.add_argument("-o", dest="output", required=True, help="output folder (created)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-pp_pkl_file", default=None,
                       help="postprocessing.pkl: read through the postprocessing.json next to it (pickles are "
                            "never loaded); give this or -pp_file (no default)")
    which.add_argument("-pp_file", default=None, help="postprocessing.json; give this or -pp_pkl_file (no default)")
    _add_setup(p)
    return p


@cli_main
def main_determine(argv: Sequence[str] | None = None) -> int:
    args = build_determine_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.postprocessing.determine import determine_postprocessing

    steps = determine_postprocessing(args.input, args.ref, args.plans_json, args.dataset_json, args.num_processes,
                                     keep_postprocessed=not args.remove_postprocessed)
    print(f"{len(steps)} postprocessing step(s) accepted; decisions in {args.input}/postprocessing.json")
    return 0


@cli_main
def main_apply(argv: Sequence[str] | None = None) -> int:
    args = build_apply_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.dataset.folder_setup import folder_setup
    from longnet.postprocessing.apply import apply_to_folder
    from longnet.postprocessing.decisions import load_decisions, resolve_decisions_file

    steps = load_decisions(resolve_decisions_file(args.pp_pkl_file, args.pp_file))
    setup = folder_setup(args.input, args.plans_json, args.dataset_json)
    names = apply_to_folder(args.input, args.output, steps, setup.file_ending, setup.reader_writer.name,
                            args.num_processes)
    print(f"postprocessed {len(names)} label map(s) ({len(steps)} step(s)) into {args.output}")
    return 0
