"""`longnet_plot_overlay_pngs`, `longnet_move_plans_between_datasets`, `longnet_convert_old_nnUNet_dataset`:
nnU-Net's dataset helper commands under longnet's names."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from longnet.cli.common import HelpFormatter, check_name, cli_main
from longnet.errors import LongnetError
from longnet.utils.parallel import default_num_processes


def build_overlay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_plot_overlay_pngs", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Write <out>/<case>.png for every training case: the slice (axis 0) with the most foreground, "
                    "labels painted over the image. Uses the preprocessed arrays of a configuration unless "
                    "--use_raw. Spacing is ignored.")
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("-o", dest="output", required=True, help="output folder (created)")
    p.add_argument("-np", dest="num_processes", type=int, default=default_num_processes(),
                   help="worker processes (default %(default)s; LONGNET_DEF_N_PROC or nnUNet_def_n_proc change it)")
    p.add_argument("-channel_idx", type=int, default=0, help="image channel to show, 0 = _0000 (default %(default)s)")
    p.add_argument("--use_raw", action="store_true", help="read the raw images and labels instead of the "
                   "preprocessed arrays (default: off)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans",
                   help="plans identifier, preprocessed data only (default %(default)s)")
    p.add_argument("-c", dest="configuration", default=None,
                   help="configuration (preprocessed data only); default 3d_fullres if planned, else 2d")
    p.add_argument("-overlay_intensity", type=float, default=0.6,
                   help="how strongly label colours are added, higher = brighter and less transparent "
                        "(default %(default)s)")
    return p


def build_move_plans_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_move_plans_between_datasets", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Copy the plans of a source dataset to a target dataset ($LONGNET_PREPROCESSED/<target>/"
                    "<tp>.json, its folder must exist), renaming dataset_name, plans_name and the data "
                    "identifiers, and choosing the image reader for the target's files.")
    p.add_argument("-s", dest="source", required=True, help="source dataset id or DatasetXXX_Name")
    p.add_argument("-t", dest="target", required=True, help="target dataset id or DatasetXXX_Name")
    p.add_argument("-sp", dest="source_plans", required=True,
                   help="source plans identifier (nnUNetPlans for nnUNetPlans.json)")
    p.add_argument("-tp", dest="target_plans", default=None,
                   help="target plans identifier; default: the source identifier (better pick a new name so the "
                        "target's own default plans are not overwritten)")
    return p


def build_convert_old_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_convert_old_nnUNet_dataset", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Copy an nnU-Net v1 raw task folder (imagesTr, labelsTr, optional imagesTs/labelsTs/"
                    "imagesVal/labelsVal, dataset.json) into $LONGNET_RAW/<output_dataset_name> with a v2 "
                    "dataset.json. Refuses if the target exists.")
    p.add_argument("input_folder", help="path of the v1 task folder (the one holding imagesTr, labelsTr)")
    p.add_argument("output_dataset_name", help="new dataset folder name, DatasetXXX_Name (a name, not a path)")
    return p


def _overlay_jobs(args: argparse.Namespace, out: Path) -> list[tuple]:
    from longnet.dataset import overlay_pngs as ov
    from longnet.paths import dataset_name_from_id, preprocessed_root, raw_root

    name = dataset_name_from_id(args.dataset)
    if args.use_raw:
        from longnet.dataset.raw import RawDataset
        from longnet.dataset.reader_choice import reader_writer_for_dataset

        ds = RawDataset(raw_root() / name)
        if not 0 <= args.channel_idx < ds.num_channels:
            raise LongnetError(f"-channel_idx {args.channel_idx} is out of range: the dataset has "
                               f"{ds.num_channels} channel(s)", ds.dataset_json_path)
        labelled = [c for c in ds.cases.values() if c.label is not None]
        if not labelled:
            raise LongnetError("no training case has a label file", ds.folder / "labelsTr")
        if len(labelled) < len(ds.cases):
            print(f"skipping {len(ds.cases) - len(labelled)} case(s) without a label file")
        reader = reader_writer_for_dataset(ds).name
        return [(ov.overlay_from_raw, c.images[args.channel_idx], c.label, out / f"{c.id}.png", args.overlay_intensity,
                 reader) for c in labelled]
    from longnet.planning.plans import Plans

    check_name(args.plans, "-p")
    folder = preprocessed_root() / name
    plans_file = folder / f"{args.plans}.json"
    if not plans_file.is_file():
        raise LongnetError("plans not found; run longnet_plan_and_preprocess first (or pass --use_raw)", plans_file)
    plans = Plans.load(plans_file)
    conf = args.configuration or ("3d_fullres" if "3d_fullres" in plans.available_configurations else "2d")
    data_dir = folder / plans.configuration(conf).data_identifier
    if not data_dir.is_dir():
        raise LongnetError(f"no preprocessed data for configuration {conf}; run longnet_preprocess -c {conf} "
                           "first (or pass --use_raw)", data_dir)
    cases = ov.preprocessed_cases(data_dir)
    if not cases:
        raise LongnetError("no preprocessed cases found", data_dir)
    return [(ov.overlay_from_preprocessed, data_dir, c, out / f"{c}.png", args.channel_idx, args.overlay_intensity)
            for c in cases]


@cli_main
def main_plot_overlay_pngs(argv: Sequence[str] | None = None) -> int:
    args = build_overlay_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.dataset.overlay_pngs import run_jobs

    if args.channel_idx < 0:
        raise LongnetError(f"-channel_idx must be >= 0, got {args.channel_idx}")
    out = Path(args.output)
    jobs = _overlay_jobs(args, out)
    out.mkdir(parents=True, exist_ok=True)
    written = run_jobs(jobs, max(1, args.num_processes))
    print(f"wrote {len(written)} overlay PNG(s) to {out}")
    return 0


@cli_main
def main_move_plans(argv: Sequence[str] | None = None) -> int:
    args = build_move_plans_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.paths import dataset_name_from_id, preprocessed_root, raw_root
    from longnet.planning.move_plans import move_plans

    check_name(args.source_plans, "-sp")
    if args.target_plans is not None:
        check_name(args.target_plans, "-tp")
    dest = move_plans(dataset_name_from_id(args.source), dataset_name_from_id(args.target), args.source_plans,
                      args.target_plans, preprocessed_root(), raw_root())
    print(f"wrote {dest}")
    return 0


@cli_main
def main_convert_old(argv: Sequence[str] | None = None) -> int:
    args = build_convert_old_parser().parse_args(argv)  # before the imports: -h answers at once
    from longnet.dataset.convert_v1 import convert_old_dataset

    dest = convert_old_dataset(args.input_folder, args.output_dataset_name)
    print(f"converted {args.input_folder} -> {dest}")
    return 0
