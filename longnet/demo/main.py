"""`longnet_demo`: build the embedded synthetic dataset and run the whole pipeline on it, in-process.

A new user has no longitudinal cohort at hand; this shows every stage working in minutes on a laptop
(generate → plan/preprocess → train each registered trainer briefly → predict → evaluate), then prints
one table and writes pictures. Each trainer is shown by a *demo recipe* (see `longnet.demo.recipes`).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import longnet.demo.segmentation  # noqa: F401  (registers the nnUNetTrainer recipe)
from longnet.cli.common import Argv, HelpFormatter, cli_main
from longnet.demo.recipes import (CONFIG, NO_RECIPE, RECIPES, SETTINGS, DemoContext, DemoSettings, RecipeResult,
                                  call_command, demo_environment, load_recipe_plugins, plan_recipes,
                                  registered_trainers, selectable_names)
from longnet.demo.synthetic import DEFAULT_DATASET_ID, dataset_folder_name, generate_demo_dataset
from longnet.errors import LongnetError
from longnet.utils.files import save_json

MARKER = ".longnet_demo"
DEFAULT_OUT = Path("~/longnet_demo_out")  # outside any source tree: a run writes a few hundred MB
DEMO_ONLY = ("predictions", "pictures")  # whole folders only the demo writes


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


HEADER = ("trainer", "output", "metric", "value", "baseline", "time")


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(HEADER), sep, *(line(r) for r in rows)])


def _prepare_out(out: Path, dataset_name: str) -> None:
    """Refuse to write into a foreign non-empty folder; clear the previous demo run's dataset folders."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise LongnetError("folder exists, is not empty and was not made by longnet_demo; choose another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by longnet_demo; its contents are replaced by the next run\n")
    for target in [out / sub / dataset_name for sub in ("raw", "preprocessed", "results")] + \
            [out / sub for sub in DEMO_ONLY]:
        if target.exists():
            shutil.rmtree(target)


def _run_recipe(ctx: DemoContext, name: str, trainers: list[str]) -> tuple[tuple[str, ...], RecipeResult | None]:
    """One table row. A failing recipe is reported (with its traceback when it is a bug) and the demo goes on:
    one broken plugin must not hide the others' results."""
    label = name if trainers == [name] else "+".join(trainers)
    t0 = time.time()
    try:
        res = RECIPES[name](ctx)
    except LongnetError as e:
        print(f"longnet_demo: {label}: {e}", file=sys.stderr)
        return (label, f"FAILED: {e}"[:80], "-", "-", "-", f"{time.time() - t0:.0f} s"), None
    except Exception as e:  # noqa: BLE001 - a plugin bug: show it, keep going
        traceback.print_exc()
        return (label, f"FAILED ({type(e).__name__}: {e})"[:80], "-", "-", "-", f"{time.time() - t0:.0f} s"), None
    baseline = f"{_fmt(res.baseline)} ({res.baseline_name})" if res.baseline_name else _fmt(res.baseline)
    return (label, res.produced, res.metric, _fmt(res.value), baseline, f"{time.time() - t0:.0f} s"), res


def run_demo(out: Path, device: str, settings: DemoSettings, seed: int, only: list[str] | None = None,
             anatomy_time_scale: float = 1.0) -> int:
    dataset_id = DEFAULT_DATASET_ID
    name = dataset_folder_name(dataset_id)
    _prepare_out(out, name)
    t0 = time.time()
    with demo_environment(out) as roots:
        registered = registered_trainers()
        to_run, skipped = plan_recipes(registered, dict(load_recipe_plugins()), only)
        print(f"[1/3] generating the demo dataset ({settings.n_subjects_train} train + {settings.n_subjects_test} "
              f"test subjects, {'x'.join(map(str, settings.shape))} voxels)", flush=True)
        folder = generate_demo_dataset(roots["LONGNET_RAW"], settings.n_subjects_train, settings.n_subjects_test,
                                       settings.shape, seed=seed, dataset_id=dataset_id, progress=True,
                                       anatomy_time_scale=anatomy_time_scale)
        print("[2/3] planning and preprocessing", flush=True)
        argv = ["-d", str(dataset_id), "-c", CONFIG, "-np", "2", "--verify_dataset_integrity"]
        if settings.gpu_memory_target:
            argv += ["-gpu_memory_target", str(settings.gpu_memory_target)]
        call_command("plan_and_preprocess", "main_plan_and_preprocess", argv)
        ctx = DemoContext(out, dataset_id, name, folder, device, settings, out / "pictures")
        ctx.pictures.mkdir(exist_ok=True)
        rows, pictures = [], []
        for i, (recipe_name, trainers) in enumerate(to_run, start=1):
            print(f"[3/3] demo recipe {i}/{len(to_run)}: {recipe_name} ({', '.join(trainers)})", flush=True)
            row, res = _run_recipe(ctx, recipe_name, trainers)
            rows.append(row)
            if res is not None:
                ctx.results[recipe_name] = res
                pictures += res.pictures
        failed = len(rows) - len(ctx.results)
        not_run = [t for t, reason in skipped if reason == NO_RECIPE]  # one line below the table, not 40 rows
        rows += [(t, reason[:80], "-", "-", "-", "-") for t, reason in skipped if reason != NO_RECIPE]
    seconds = time.time() - t0
    print(f"\nlongnet demo finished in {seconds:.0f} s ({device})\n\n{format_table(rows)}\n")
    if not_run:
        print(f"not run (no demo recipe): {_names(not_run)}\n")
    print("pictures:\n" + "\n".join(f"  {p}" for p in pictures) if pictures else "pictures: none")
    written = sorted(f"{p.name}/" for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    print(f"outputs under {out} ({', '.join(written)} demo_summary.json)")
    summary = {"device": device, "seconds": round(seconds, 1), "settings": asdict(settings),
               "rows": [dict(zip(HEADER, r)) for r in rows], "pictures": [str(p) for p in pictures],
               "no_demo_recipe": not_run}
    save_json(summary, out / "demo_summary.json", indent=2)
    print_environment(out / "raw", out / "preprocessed", out / "results", name)
    return 1 if failed else 0


def _names(trainers: list[str]) -> str:
    """Trainer names for one line: nnU-Net's many variants are counted, not listed."""
    variants = [t for t in trainers if t.startswith("nnUNetTrainer")]
    others = [t for t in trainers if t not in variants]
    if len(variants) > 3:
        return ", ".join(others + [f"{len(variants)} nnU-Net trainer variants (longnet_plugins lists them)"])
    return ", ".join(trainers)


def print_environment(raw: Path, preprocessed: Path, results: Path, dataset_name: str) -> None:
    """The shell lines that point longnet's commands at the demo's data, so the README's examples run on it."""
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    print("\nto run the README's examples on this data (they run in the raw dataset folder and write their "
          "predictions under $P):\n"
          f"  export LONGNET_RAW={q(raw)} LONGNET_PREPROCESSED={q(preprocessed)} LONGNET_RESULTS={q(results)}\n"
          f"  export R=$LONGNET_RESULTS/{dataset_name} P={q(Path(results).parent / 'examples')}\n"
          f"  cd {q(raw / dataset_name)}")


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longnet_demo", allow_abbrev=False, formatter_class=HelpFormatter,
                                description="Generate the embedded synthetic longitudinal dataset and run the whole "
                                            "longnet pipeline on it. Ends by printing the `export LONGNET_...` lines "
                                            "that point the README's examples at its data.")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="output folder, a few hundred MB; replaced by the next run (default: ~/longnet_demo_out)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    p.add_argument("--only-dataset", action="store_true", help="only write OUT/Dataset990_LongDemo/ and stop")
    p.add_argument("--quick", action="store_true", help="smaller dataset and schedule (CI; ~1-2 min on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset (default 0)")
    p.add_argument("--anatomy-time-scale", dest="anatomy_time_scale", type=float, default=1.0,
                   help="how fast the anatomy changes between visits, relative to the default cohort (default 1; "
                        "0.1: nearly stable anatomy, the setting temporal-consistency methods assume)")
    p.add_argument("--trainers", nargs="+", default=None, metavar="NAME",
                   help="run only these demo recipes / trainers, e.g. nnUNetTrainer LongRep (default: every "
                        "registered trainer with a recipe)")
    return p


@cli_main
def main(argv: Argv = None) -> int:
    args = _parser().parse_args(argv)
    settings = SETTINGS["quick" if args.quick else "default"]
    out = Path(args.out).expanduser().resolve()
    if args.anatomy_time_scale < 0:
        raise LongnetError(f"--anatomy-time-scale must be >= 0, got {args.anatomy_time_scale:g}")
    if args.trainers:  # before anything is written or imported: a typo costs nothing
        valid = selectable_names()
        unknown = [n for n in args.trainers if n not in valid]
        if unknown:
            raise LongnetError(f"--trainers: no demo recipe or trainer named {', '.join(map(repr, unknown))}; "
                               f"valid: {', '.join(valid)}")
    if args.only_dataset:
        if not out.exists() or not any(out.iterdir()):
            out.mkdir(parents=True, exist_ok=True)
            (out / MARKER).write_text("made by longnet_demo; its contents are replaced by the next run\n")
        folder = generate_demo_dataset(out, settings.n_subjects_train, settings.n_subjects_test, settings.shape,
                                       seed=args.seed, progress=True, anatomy_time_scale=args.anatomy_time_scale)
        print(f"wrote {folder}")
        print_environment(out, out / "preprocessed", out / "results", folder.name)
        return 0
    device = args.device or _default_device()
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LongnetError("--device cuda was asked for but torch sees no CUDA device")
    return run_demo(out, device, settings, args.seed, args.trainers, args.anatomy_time_scale)


if __name__ == "__main__":
    sys.exit(main())
