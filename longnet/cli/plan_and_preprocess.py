"""`longnet_plan_and_preprocess` and its three stages as separate commands (nnU-Net's flags)."""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from longnet.cli.common import cli_main
from longnet.dataset.raw import RawDataset
from longnet.errors import LongnetError
from longnet.paths import dataset_name_from_id, preprocessed_root, raw_root
from longnet.utils.files import atomic_path, load_json, save_json

DEFAULT_CONFIGS = ["2d", "3d_fullres", "3d_lowres"]


def _default_np() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", nargs="+", required=True, help="dataset id(s) or DatasetXXX_Name folder name(s)")


def _add_fingerprint(p: argparse.ArgumentParser) -> None:
    p.add_argument("-npfp", type=int, default=None, help="processes for fingerprint extraction")
    p.add_argument("--verify_dataset_integrity", action="store_true",
                   help="check every file (geometry, labels, NaN, subjects, days) before anything is written")
    p.add_argument("--clean", action="store_true", help="recompute the fingerprint even if it exists")


def _add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("-pl", default="ExperimentPlanner", help="planner (entry point in longnet.planners)")
    p.add_argument("-gpu_memory_target", type=float, default=None, help="GPU memory target in GB")
    p.add_argument("-preprocessor_name", default="DefaultPreprocessor")
    p.add_argument("-overwrite_target_spacing", nargs="+", type=float, default=None)
    p.add_argument("-overwrite_plans_name", default=None)


def _add_align(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--align", choices=["none", "rigid", "affine", "deformable"], default=default,
                   help="register every visit of a subject to its first visit before preprocessing (recorded in "
                        "the plans; the data identifier gets an _aligned<Mode> suffix)"
                        + ("" if default else "; default: what the plans say"))


def _add_preprocess(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", nargs="+", default=DEFAULT_CONFIGS, help="configurations to preprocess")
    p.add_argument("-np", nargs="+", type=int, default=None, help="processes (one value, or one per configuration)")
    p.add_argument("-plans_name", default=None, help="plans to preprocess (default: the planner's plans name)")
    p.add_argument("--verbose", action="store_true")


def _folders(dataset: str) -> tuple[str, Path, Path]:
    name = dataset_name_from_id(dataset, raw_root())
    return name, raw_root() / name, preprocessed_root() / name


def extract_fingerprint(dataset: str, num_processes: int, verify: bool, clean: bool, verbose: bool = True) -> dict:
    from longnet.fingerprint.extractor import extract_fingerprint as _extract

    name, raw_dir, pre_dir = _folders(dataset)
    raw = RawDataset(raw_dir)
    if verify:
        from longnet.dataset.integrity import check_dataset

        check_dataset(raw_dir, num_processes=num_processes)
    fp_path = pre_dir / "dataset_fingerprint.json"
    if fp_path.is_file() and not clean:
        return load_json(fp_path)
    fingerprint = _extract(raw, num_processes=num_processes, verbose=verbose)  # reads every file: fails before writing
    pre_dir.mkdir(parents=True, exist_ok=True)
    _write_dataset_files(raw, pre_dir)
    save_json(fingerprint, fp_path)
    return fingerprint


def _write_dataset_files(raw: RawDataset, pre_dir: Path) -> None:
    """dataset.json, subjects.json, visits.json, gt_segmentations/ next to the plans."""
    shutil.copyfile(raw.dataset_json_path, pre_dir / ".dataset.json.tmp")
    os.replace(pre_dir / ".dataset.json.tmp", pre_dir / "dataset.json")
    save_json(raw.subjects, pre_dir / "subjects.json")
    save_json({c: {"days": v.days, "subject": v.subject, "visit_index": v.visit_index, "labelled": v.label is not None,
                   "meta": v.meta} for c, v in raw.cases.items()}, pre_dir / "visits.json")
    gt = pre_dir / "gt_segmentations"
    gt.mkdir(exist_ok=True)
    for cid, case in raw.cases.items():
        if case.label is not None:
            dest = gt / case.label.name
            if not dest.is_file():
                with atomic_path(dest, suffix=raw.file_ending) as tmp:
                    shutil.copyfile(case.label, tmp)


def plan_experiment(dataset: str, planner_name: str, gpu_memory_target: float | None, plans_name: str | None,
                    overwrite_target_spacing=None, preprocessor_name: str = "DefaultPreprocessor",
                    align: str = "none") -> str:
    """Plan from the fingerprint. The fingerprint describes the UNALIGNED raw data even with `align` on (as
    nnU-Net, which never registers): rigid/affine alignment resamples each visit onto its reference visit's grid,
    which has the spacing and intensities of a real acquisition of the same dataset, so spacing, shape and
    intensity statistics stay representative, and the fingerprint need not be redone per alignment mode."""
    from longnet.preprocessing.alignment import apply_alignment_to_plans
    from longnet.registry import get_planner

    name, raw_dir, pre_dir = _folders(dataset)
    fp_path = pre_dir / "dataset_fingerprint.json"
    if not fp_path.is_file():
        raise LongnetError("no fingerprint found: run longnet_extract_fingerprint first", fp_path)
    planner_cls = get_planner(planner_name)
    planner = planner_cls(load_json(raw_dir / "dataset.json"), load_json(fp_path), name, gpu_memory_target,
                          plans_name, preprocessor_name, overwrite_target_spacing)
    plans = apply_alignment_to_plans(planner.plan(), align)
    dest = pre_dir / f"{planner.plans_name}.json"
    if dest.is_file():  # keep configurations a user added by hand
        old = load_json(dest).get("configurations", {})
        for k, v in old.items():
            plans["configurations"].setdefault(k, v)
    save_json(plans, dest)
    splits = pre_dir / "splits_final.json"
    if not splits.is_file():
        from longnet.preprocessing.splits import subject_level_splits

        folds = subject_level_splits(load_json(pre_dir / "subjects.json"))
        if folds:
            save_json(folds, splits)
    return planner.plans_name


def preprocess(dataset: str, plans_name: str, configurations: list[str], num_processes: list[int],
               verbose: bool = True, align: str | None = None) -> None:
    """`align` (if given and different from the plans') is written into the plans file first, so that the
    plans always describe the preprocessed data they point to."""
    from longnet.planning.plans import Plans
    from longnet.preprocessing.alignment import alignment_mode, apply_alignment_to_plans
    from longnet.preprocessing.run import preprocess_dataset

    name, raw_dir, pre_dir = _folders(dataset)
    plans_path = pre_dir / f"{plans_name}.json"
    plans = Plans.load(plans_path)
    if align is not None and align != alignment_mode(plans.plans):
        plans = Plans(apply_alignment_to_plans(plans.plans, align), plans_path)
        save_json(plans.plans, plans_path)
    if len(num_processes) == 1:
        num_processes = num_processes * len(configurations)
    if len(num_processes) != len(configurations):
        raise LongnetError(f"-np needs one value or one per configuration ({len(configurations)})")
    raw = RawDataset(raw_dir)
    for conf_name, n in zip(configurations, num_processes):
        if conf_name not in plans.available_configurations:
            print(f"configuration {conf_name} is not in {plans_name}: skipped")
            continue
        conf = plans.configuration(conf_name)
        preprocess_dataset(raw, plans, conf_name, pre_dir / conf.data_identifier, n, verbose)


def _np(args) -> list[int]:
    return args.np if args.np else [_default_np()]


@cli_main
def main_plan_and_preprocess(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_plan_and_preprocess",
                                description="Fingerprint, plan and preprocess raw datasets (nnU-Net compatible).")
    _add_common(p)
    _add_fingerprint(p)
    _add_plan(p)
    _add_preprocess(p)
    _add_align(p, "none")
    p.add_argument("--no_pp", action="store_true", help="stop after planning")
    args = p.parse_args(argv)
    from longnet.registry import get_planner

    get_planner(args.pl)  # an unknown/broken planner fails before the fingerprint writes anything
    for d in args.d:
        t0 = time.perf_counter()
        npfp = args.npfp or _np(args)[0]
        extract_fingerprint(d, npfp, args.verify_dataset_integrity, args.clean)
        plans_name = plan_experiment(d, args.pl, args.gpu_memory_target, args.overwrite_plans_name,
                                     args.overwrite_target_spacing, args.preprocessor_name, args.align)
        if not args.no_pp:
            preprocess(d, args.plans_name or plans_name, args.c, _np(args), align=args.align)
        print(f"{d}: done in {time.perf_counter() - t0:.1f} s (plans: {plans_name})")
    return 0


@cli_main
def main_extract_fingerprint(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_extract_fingerprint")
    _add_common(p)
    _add_fingerprint(p)
    p.add_argument("-np", type=int, default=None)
    args = p.parse_args(argv)
    for d in args.d:
        extract_fingerprint(d, args.npfp or args.np or _default_np(), args.verify_dataset_integrity, args.clean)
    return 0


@cli_main
def main_plan_experiment(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_plan_experiment")
    _add_common(p)
    _add_plan(p)
    args = p.parse_args(argv)
    for d in args.d:
        plan_experiment(d, args.pl, args.gpu_memory_target, args.overwrite_plans_name, args.overwrite_target_spacing,
                        args.preprocessor_name)
    return 0


@cli_main
def main_preprocess(argv=None) -> int:
    p = argparse.ArgumentParser(prog="longnet_preprocess")
    _add_common(p)
    _add_preprocess(p)
    _add_align(p, None)
    args = p.parse_args(argv)
    for d in args.d:
        preprocess(d, args.plans_name or "nnUNetPlans", args.c, _np(args), align=args.align)
    return 0
