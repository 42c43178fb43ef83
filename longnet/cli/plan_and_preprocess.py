"""`longnet_plan_and_preprocess` and its three stages as separate commands (nnU-Net's flags)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from longnet.cli.common import HelpFormatter, cli_main, print_warnings
from longnet.dataset.raw import RawDataset
from longnet.errors import LongnetError
from longnet.paths import dataset_name_from_id, preprocessed_root, raw_root
from longnet.utils.files import load_json, save_json

DEFAULT_CONFIGS = ["2d", "3d_fullres", "3d_lowres"]


def _default_np() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", nargs="+", required=True, help="dataset id(s) or DatasetXXX_Name folder name(s)")


def _add_fingerprint(p: argparse.ArgumentParser) -> None:
    p.add_argument("-npfp", type=int, default=None,
                   help="processes for fingerprint extraction (default: -np, else min(CPU cores, 8))")
    p.add_argument("--verify_dataset_integrity", action="store_true",
                   help="check every file (geometry, labels, NaN, subjects, days) before anything is written")
    p.add_argument("--clean", action="store_true", help="recompute the fingerprint even if it exists")


def _add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("-pl", default="ExperimentPlanner", help="planner (entry point in longnet.planners)")
    p.add_argument("-gpu_memory_target", type=float, default=None,
                   help="GPU memory target in GB (default: the planner's, 8 for ExperimentPlanner)")
    p.add_argument("-preprocessor_name", default="DefaultPreprocessor",
                   help="preprocessor recorded in the plans (nnU-Net compatibility)")
    p.add_argument("-overwrite_target_spacing", nargs="+", type=float, default=None,
                   help="target spacing of 3d_fullres, one value per axis (default: the planner's choice)")
    p.add_argument("-overwrite_plans_name", default=None,
                   help="plans name to write, e.g. to keep several plans of one dataset (default: the planner's, "
                        "nnUNetPlans)")


def _add_align(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--align", choices=["none", "rigid", "affine", "deformable"], default=default,
                   help="register every visit of a subject to its first visit before preprocessing (recorded in "
                        "the plans; the data identifier gets an _aligned<Mode> suffix)"
                        + ("" if default else "; default: what the plans say"))


def _add_preprocess(p: argparse.ArgumentParser, plans_name: bool = True) -> None:
    """`plans_name` only for longnet_preprocess: plan_and_preprocess preprocesses the plans it just wrote (their
    name is -overwrite_plans_name), as nnU-Net's does."""
    p.add_argument("-c", nargs="+", default=DEFAULT_CONFIGS, help="configurations to preprocess")
    p.add_argument("-np", nargs="+", type=int, default=None,
                   help="processes (one value, or one per configuration; default: min(CPU cores, 8))")
    if plans_name:
        p.add_argument("-plans_name", default="nnUNetPlans", help="plans to preprocess")
    p.add_argument("--verbose", action="store_true", help="print per-case progress")


def _folders(dataset: str) -> tuple[str, Path, Path]:
    name = dataset_name_from_id(dataset, raw_root())
    return name, raw_root() / name, preprocessed_root() / name


def extract_fingerprint(dataset: str, num_processes: int, verify: bool, clean: bool, verbose: bool = True) -> dict:
    """Fingerprint plus the dataset-level files (dataset.json, subjects.json, visits.json, gt_segmentations/,
    splits_final.json), each recomputed when the raw files it derives from changed. Everything that can refuse
    (structure, integrity, a user's splits file that leaks a subject, unreadable cases) runs before any write."""
    from longnet.fingerprint.extractor import extract_fingerprint as _extract
    from longnet.preprocessing.dataset_files import DatasetFiles

    name, raw_dir, pre_dir = _folders(dataset)
    raw = RawDataset(raw_dir)
    print_warnings(raw.unlabelled_warnings())
    if verify:
        from longnet.dataset.integrity import check_dataset

        check_dataset(raw_dir, num_processes=num_processes)
    files = DatasetFiles.plan(raw, pre_dir)
    fp_path = pre_dir / "dataset_fingerprint.json"
    if fp_path.is_file() and not clean and files.fingerprint_current:
        files.write(None)
        return load_json(fp_path)
    fingerprint = _extract(raw, num_processes=num_processes, verbose=verbose)  # reads every file: fails before writing
    files.write(fingerprint)
    return fingerprint


def plan_experiment(dataset: str, planner_name: str, gpu_memory_target: float | None, plans_name: str | None,
                    overwrite_target_spacing=None, preprocessor_name: str = "DefaultPreprocessor",
                    align: str = "none") -> str:
    """Plan from the fingerprint. The fingerprint describes the UNALIGNED raw data even with `align` on (as
    nnU-Net, which never registers): rigid/affine alignment resamples each visit onto its reference visit's grid,
    which has the spacing and intensities of a real acquisition of the same dataset, so spacing, shape and
    intensity statistics stay representative, and the fingerprint need not be redone per alignment mode."""
    from longnet.preprocessing.alignment import alignment_mode, apply_alignment_to_plans
    from longnet.registry import get_planner

    name, raw_dir, pre_dir = _folders(dataset)
    fp_path = pre_dir / "dataset_fingerprint.json"
    if not fp_path.is_file():
        raise LongnetError("no fingerprint found: run longnet_extract_fingerprint first", fp_path)
    from longnet.dataset.reader_choice import reader_writer_for_dataset

    planner_cls = get_planner(planner_name)
    planner = planner_cls(load_json(raw_dir / "dataset.json"), load_json(fp_path), name, gpu_memory_target,
                          plans_name, preprocessor_name, overwrite_target_spacing)
    planner.image_reader_writer = reader_writer_for_dataset(RawDataset(raw_dir)).name
    plans = apply_alignment_to_plans(planner.plan(), align)
    dest = pre_dir / f"{planner.plans_name}.json"
    if dest.is_file():  # keep configurations a user added by hand
        previous = load_json(dest)
        old = previous.get("configurations", {})
        for k, v in old.items():
            plans["configurations"].setdefault(k, v)
        before = alignment_mode(previous)
        if before != align:  # the other mode's arrays stay in their own folder, but these plans no longer name them
            print(f"longnet: warning: {dest.name} was planned with --align {before}; it now holds plans with --align "
                  f"{align}. To keep both, give one of them its own name with -overwrite_plans_name NAME.",
                  file=sys.stderr)
    save_json(plans, dest)
    subjects_file = pre_dir / "subjects.json"
    if subjects_file.is_file():  # normally already in step (fingerprint stage); plan_experiment may run alone
        from longnet.preprocessing.splits import plan_splits, write_generated_splits

        subjects = load_json(subjects_file)
        folds = plan_splits(pre_dir, subjects, subjects)
        if folds is not None:
            write_generated_splits(pre_dir, folds)
    _report_configurations(name, plans)
    return planner.plans_name


def _report_configurations(dataset_name: str, plans: dict) -> None:
    """One line on what was planned and, for nnU-Net's default configurations that were not, why."""
    planned = list(plans["configurations"])
    missing = [f"{c} ({unplanned_reason(plans, c)})" for c in DEFAULT_CONFIGS if c not in planned]
    print(f"{dataset_name}: {plans['plans_name']} plans {', '.join(planned)}"
          + (f"; not planned: {'; '.join(missing)}" if missing else ""))


def preprocess(dataset: str, plans_name: str, configurations: list[str], num_processes: list[int],
               verbose: bool = True, align: str | None = None) -> None:
    """`align` (if given and different from the plans') is written into the plans file first, so that the
    plans always describe the preprocessed data they point to."""
    from longnet.planning.plans import Plans
    from longnet.preprocessing.alignment import alignment_mode, apply_alignment_to_plans
    from longnet.preprocessing.dataset_files import DatasetFiles
    from longnet.preprocessing.run import preprocess_dataset

    name, raw_dir, pre_dir = _folders(dataset)
    plans_path = pre_dir / f"{plans_name}.json"
    plans = Plans.load(plans_path)
    raw = RawDataset(raw_dir)
    files = DatasetFiles.plan(raw, pre_dir)  # refuses a user's splits file that now leaks, before any write
    if align is not None and align != alignment_mode(plans.plans):
        plans = Plans(apply_alignment_to_plans(plans.plans, align), plans_path)
        save_json(plans.plans, plans_path)
    if len(num_processes) == 1:
        num_processes = num_processes * len(configurations)
    if len(num_processes) != len(configurations):
        raise LongnetError(f"-np needs one value or one per configuration ({len(configurations)})")
    files.write(None, fingerprint_checked=False)  # subjects.json, visits.json, splits in step with the raw files
    for conf_name, n in zip(configurations, num_processes):
        if conf_name not in plans.available_configurations:
            print(f"configuration {conf_name} is not planned for {name}: {unplanned_reason(plans.plans, conf_name)}"
                  "; skipped")
            continue
        conf = plans.configuration(conf_name)
        preprocess_dataset(raw, plans, conf_name, pre_dir / conf.data_identifier, n, verbose)


def unplanned_reason(plans: dict, configuration: str) -> str:
    """Why a plans file lacks a configuration, in nnU-Net's planning terms (one line for the user)."""
    configs = plans.get("configurations", {})
    median = plans.get("original_median_shape_after_transp") or []
    if configuration.startswith("3d") and "3d_fullres" not in configs and median[:1] == [1]:
        return "images are 2D (one slice), so only the 2d configuration is planned"
    if configuration in ("3d_lowres", "3d_cascade_fullres") and "3d_fullres" in configs:
        return ("the 3d_fullres patch already covers enough of the median image, so no low-resolution "
                "stage (cascade) is planned")
    return f"{plans.get('plans_name', 'the plans')} has no configuration of that name"


def _np(args) -> list[int]:
    return args.np if args.np else [_default_np()]


def _check_numbers(args: argparse.Namespace) -> argparse.Namespace:
    """Process counts >= 1, a positive GPU memory target and spacing: `-np 0` used to mean 'the default'."""
    for flag in ("np", "npfp"):
        values = getattr(args, flag, None)
        for v in values if isinstance(values, list) else [values]:
            if v is not None and v < 1:
                raise LongnetError(f"-{flag} must be an integer >= 1 (number of processes), got {v}")
    target = getattr(args, "gpu_memory_target", None)
    if target is not None and not target > 0:
        raise LongnetError(f"-gpu_memory_target must be a number of GB > 0, got {target:g}")
    spacing = getattr(args, "overwrite_target_spacing", None)
    if spacing is not None and not all(x > 0 for x in spacing):
        raise LongnetError(f"-overwrite_target_spacing must be positive numbers, got {spacing}")
    return args


@cli_main
def main_plan_and_preprocess(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_plan_and_preprocess", allow_abbrev=False, formatter_class=HelpFormatter,
                                description="Fingerprint, plan and preprocess raw datasets (nnU-Net compatible).")
    _add_common(p)
    _add_fingerprint(p)
    _add_plan(p)
    _add_preprocess(p, plans_name=False)
    _add_align(p, "none")
    p.add_argument("--no_pp", action="store_true", help="stop after planning")
    args = _check_numbers(p.parse_args(argv))
    from longnet.registry import get_planner

    get_planner(args.pl)  # an unknown/broken planner fails before the fingerprint writes anything
    for d in args.d:
        t0 = time.perf_counter()
        npfp = args.npfp or _np(args)[0]
        extract_fingerprint(d, npfp, args.verify_dataset_integrity, args.clean)
        plans_name = plan_experiment(d, args.pl, args.gpu_memory_target, args.overwrite_plans_name,
                                     args.overwrite_target_spacing, args.preprocessor_name, args.align)
        if not args.no_pp:
            preprocess(d, plans_name, args.c, _np(args), align=args.align)
        print(f"{d}: done in {time.perf_counter() - t0:.1f} s (plans: {plans_name})")
    return 0


@cli_main
def main_extract_fingerprint(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_extract_fingerprint", allow_abbrev=False, formatter_class=HelpFormatter)
    _add_common(p)
    _add_fingerprint(p)
    p.add_argument("-np", type=int, default=None, help="processes (default: min(CPU cores, 8))")
    args = _check_numbers(p.parse_args(argv))
    for d in args.d:
        extract_fingerprint(d, args.npfp or args.np or _default_np(), args.verify_dataset_integrity, args.clean)
    return 0


@cli_main
def main_plan_experiment(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_plan_experiment", allow_abbrev=False, formatter_class=HelpFormatter)
    _add_common(p)
    _add_plan(p)
    args = _check_numbers(p.parse_args(argv))
    for d in args.d:
        plan_experiment(d, args.pl, args.gpu_memory_target, args.overwrite_plans_name, args.overwrite_target_spacing,
                        args.preprocessor_name)
    return 0


@cli_main
def main_preprocess(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_preprocess", allow_abbrev=False, formatter_class=HelpFormatter)
    _add_common(p)
    _add_preprocess(p)
    _add_align(p, None)
    args = _check_numbers(p.parse_args(argv))
    for d in args.d:
        preprocess(d, args.plans_name, args.c, _np(args), align=args.align)
    return 0
