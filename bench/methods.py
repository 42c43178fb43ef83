"""Method benchmark: every longitudinal method against its baseline(s) at equal budgets over several seeds, one table.

    python3 bench/methods.py -d 990 [--seeds 0 1 2] [--methods tfm longrep stamp learner clinimcl] [--quick] [--out OUT]
    python3 bench/methods.py --demo-cohort 0 [--anatomy-time-scale 0.1] [--train-subjects 24 --test-subjects 8] ...

Arms (bench/methods_arms.py), each trained on fold `all` of the training subjects and scored on the test split:
  tfm       TFMTrainer (TFM_ARGS) vs the last context image (LCI) and the context mean: NRMSE of the forecast last
            visit, overall and where |target - LCI| > 0.1 (lower is better)
  longrep   LongRepPretrainer on every training visit, then LongRepFinetuner (SGD, L_cs summed, as
            bench/longrep_oneshot.py) on the labels of --labelled-subjects subjects vs nnUNetTrainer from random init
            on the same subjects and the same number of supervised steps: mean foreground Dice of the test visits
  stamp     STAMPTrainer + STAMPProbeTrainer vs the same probe on a random encoder (`--random-encoder`): test AUROC
            of `converter` per subject (mean probability over its visits; nan when the test split holds one class)
  learner   LEARNERTrainer (weighted contrastive) vs `--contrastive-weight 0` (MSE-only), each followed by the
            frozen-encoder change classifier: change macro-F1 and Spearman ρ(consecutive distance, |Δscore|)
  clinimcl  ClinImCLTrainer vs its seeded untrained encoder (`--random-init`): MCCD / between-subject distance
            (lower is better)
Every training uses CPU-sized plans (`longnet_plan_and_preprocess -c 3d_fullres -pl nnUNetPlannerCPU`): TFM and
LongRep those with `--align rigid` (nnUNetPlansCPU), STAMP, LEARNER and ClinImCL unaligned ones
(nnUNetPlansCPUUnaligned; why: methods_arms.PLANS); `--seed S` (LongRep's labelled subjects are drawn with the same S)
and its own model folder (`--output-name ARM_sS`). A method whose inputs the dataset lacks is skipped with a
one-line reason.

Data: `--demo-cohort SEED` generates the synthetic cohort (dataset 990 unless -d) under OUT/raw; otherwise dataset -d
is read from $LONGNET_RAW (its test side imagesTs/, labelsTs/, patientsTs.json, visitsTs.csv is the test split).
Either way it is preprocessed into OUT/preprocessed and trained into OUT/results, so no model of yours is touched.
Prints a progress line per seed and method, then a markdown table (mean ± sd over seeds, and in how many seeds the
method beat its baseline); writes OUT/methods.json (every per-seed number, the arguments, budgets and times) and
each method's command output to OUT/logs/. OUT is replaced by the next run; two runs must not share it.
Default budgets: about 33 min for 3 seeds of all methods on the default cohort (24 train / 8 test subjects) on one
core of the 2-core development machine, so two cohorts run side by side in about 34 min (docs/methods_benchmark.md);
`--quick` only checks the pipeline (numbers meaningless).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfm_demo import DEMO_NET  # noqa: E402

#: TFMTrainer's flags for every seed: bench/tfm_demo.py's CPU network (DEMO_NET, σ = 0) and lr 1e-3, with the default
#: context residual (plugins/longnet_tfm/README.md, "Where the gain comes from", has the ablation).
TFM_ARGS = [*DEMO_NET, "--lr", "1e-3"]
#: STAMP's encoder size (pretraining and the random-encoder baseline).
STAMP_ENCODER = ["--preset", "tiny"]
#: More flags per training stage (every training of that stage gets them); "longrep_finetune": LongRepFinetuner only.
FLAGS = {
    "tfm": TFM_ARGS,
    "longrep_pretrain": ["--proj-width", "256", "--num-patches", "128"],  # bench/longrep_oneshot.py's defaults
    "longrep_finetune": ["--transfer", "no-output", "--optimizer", "sgd", "--cs-mode", "sum"],
    "stamp_pretrain": [*STAMP_ENCODER, "--batch-size", "8"],
    "stamp_probe": ["--batch-size", "32"],
    "stamp_encoder": STAMP_ENCODER,
}
#: (epochs, iterations per epoch) of every training stage. A method and its baseline train in the same stage (same
#: steps); pretraining stages are the methods' extra compute. LongRep's supervised stage: nnU-Net's SGD on
#: nnUNetPlansCPU (batch 2) learned no foreground at all in 10 x 20 steps (test Dice 0 for both arms) and first
#: segments the ventricles after ~250 steps, hence 400; LongRep pretrains for 100 steps (bench/longrep_oneshot.py: 200)
#: to keep 3 seeds of every method on the default cohort near 25 min on 2 cores.
BUDGETS = {
    "default": {"tfm": (12, 20), "longrep_pretrain": (10, 10), "longrep_supervised": (16, 25),
                "stamp_pretrain": (15, 25), "stamp_probe": (4, 125), "learner": (8, 25), "clinimcl": (8, 25)},
}
BUDGETS["quick"] = {stage: (1, 2) for stage in BUDGETS["default"]}
STAMP_HORIZON_DAYS = 730.0  # the demo's `converter` horizon (2 years)
METHODS = ["tfm", "longrep", "stamp", "learner", "clinimcl"]
MARKER = ".longnet_methods_bench"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", default=None, help="dataset id (with --demo-cohort: default 990)")
    p.add_argument("--demo-cohort", dest="demo_cohort", type=int, default=None, metavar="SEED",
                   help="generate the synthetic demo cohort with this data seed under OUT and benchmark it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--quick", action="store_true", help="tiniest budgets: a pipeline check, numbers meaningless")
    p.add_argument("--out", default="/tmp/longnet_methods_bench",
                   help="work folder, replaced by the next run (default /tmp/longnet_methods_bench)")
    p.add_argument("--labelled-subjects", dest="labelled_subjects", type=int, default=2,
                   help="LongRep: training subjects whose labels both arms see (default 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--verbose", action="store_true", help="show the commands' output instead of logging it")
    g = p.add_argument_group("demo cohort (--demo-cohort)")
    g.add_argument("--train-subjects", dest="train_subjects", type=int, default=24,
                   help="training subjects of the generated cohort (default 24; longnet_demo's has 12)")
    g.add_argument("--test-subjects", dest="test_subjects", type=int, default=8,
                   help="test subjects (default 8; longnet_demo's has 4)")
    g.add_argument("--shape", type=int, nargs=3, default=[32, 40, 32], metavar=("Z", "Y", "X"),
                   help="volume size in voxels (default 32 40 32, as longnet_demo)")
    g.add_argument("--anatomy-time-scale", dest="anatomy_time_scale", type=float, default=1.0,
                   help="< 1: anatomy changes that much slower between visits (0.1: nearly stable)")
    return p


def _claim(out: Path) -> None:
    """Make `out` this run's folder: refuse a foreign non-empty folder or one a running benchmark uses."""
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            raise SystemExit(f"{out} exists, is not empty and was not made by this script; choose another --out")
        pid = marker.read_text().split()[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            raise SystemExit(f"{out} is in use by a running benchmark (pid {pid}); choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()} running: made by bench/methods.py, replaced by its next run\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _logged(log: Path, verbose: bool):
    """Commands' output into `log` (its tail is shown when a step fails), or on the terminal with --verbose."""
    if verbose:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            yield
        except BaseException:
            f.flush()
            sys.__stderr__.write(log.read_text()[-3000:])
            raise


def _stat(values: list[float]) -> str:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if not len(v):
        return "nan"
    fmt = ".3f" if abs(v.mean()) >= 0.1 else ".4f"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (method, baseline, metric): per-seed values, mean ± sd, and wins = seeds where the method's value
    is better than its baseline's (counted over the seeds where both are finite)."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        for c in run.get("comparisons", []):
            r = rows.setdefault((c["method"], c["baseline"], c["metric"]),
                                {**{k: c[k] for k in ("method", "baseline", "metric", "better")}, "seeds": [],
                                 "method_values": [], "baseline_values": []})
            r["seeds"].append(run["seed"])
            r["method_values"].append(c["method_value"])
            r["baseline_values"].append(c["baseline_value"])
    for r in rows.values():
        pairs = [(m, b) for m, b in zip(r["method_values"], r["baseline_values"]) if math.isfinite(m + b)]
        r["wins"] = sum((m < b) if r["better"] == "lower" else (m > b) for m, b in pairs)
        r["compared"] = len(pairs)
    return list(rows.values())


def table(rows: list[dict], n_seeds: int) -> str:
    lines = ["| method | baseline | metric | method mean ± sd | baseline mean ± sd | wins (seeds) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        wins = f"{r['wins']}/{r['compared']}" + (f" (of {n_seeds})" if r["compared"] != n_seeds else "")
        metric = r["metric"].replace("|", "\\|")  # |Δscore| inside a markdown cell
        lines.append(f"| {r['method']} | {r['baseline']} | {metric} ({r['better']} is better) | "
                     f"{_stat(r['method_values'])} | {_stat(r['baseline_values'])} | {wins} |")
    return "\n".join(lines)


def _prepare(args, roots: dict, log: Path) -> tuple[int, str, Path]:
    """(dataset id, folder name, raw folder): the generated demo cohort, or the user's dataset from $LONGNET_RAW."""
    from longnet.demo.synthetic import generate_demo_dataset
    from longnet.paths import dataset_name_from_id

    if args.demo_cohort is not None:
        did = int(args.dataset or 990)
        with _logged(log, args.verbose):
            raw = generate_demo_dataset(roots["LONGNET_RAW"], args.train_subjects, args.test_subjects, args.shape,
                                        seed=args.demo_cohort, dataset_id=did,
                                        anatomy_time_scale=args.anatomy_time_scale)
        return did, raw.name, raw
    name = dataset_name_from_id(args.dataset, Path(os.environ["LONGNET_RAW"]))
    return int(name[7:10]), name, Path(os.environ["LONGNET_RAW"]) / name


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.demo_cohort is None and args.dataset is None:
        raise SystemExit("give -d DATASET (read from $LONGNET_RAW) or --demo-cohort SEED")
    from longnet.errors import LongnetError
    from longnet.paths import raw_root

    try:
        user_raw = None if args.demo_cohort is not None else raw_root()
    except LongnetError as e:
        raise SystemExit(f"-d {args.dataset}: {e}") from None
    out = Path(args.out).resolve()
    _claim(out)
    os.environ.setdefault("LONGNET_N_PROC_DA", "0")  # in-process loading: no worker copies on 2 cores
    os.environ.setdefault("LONGNET_COMPILE", "0")
    import torch

    torch.set_num_threads(1)  # on 2 shared cores one thread is much faster than two for these small networks
    import methods_arms as arms
    from longnet.demo.recipes import call_command, demo_environment

    budget = BUDGETS["quick" if args.quick else "default"]
    t0 = time.time()
    recorded = {k: v for k, v in vars(args).items()  # the cohort options only describe a generated cohort
                if args.demo_cohort is not None or k not in ("train_subjects", "test_subjects", "shape",
                                                             "anatomy_time_scale")}
    result = {"args": recorded, "budgets": budget, "flags": FLAGS, "skipped": {}, "runs": [], "times": {}}

    def save() -> None:
        result["summary"] = summarise(result["runs"])
        result["times"]["total_s"] = round(time.time() - t0, 1)
        (out / "methods.json").write_text(json.dumps(result, indent=1, default=str))

    with demo_environment(out) as roots:
        if user_raw is not None:
            os.environ["LONGNET_RAW"] = str(user_raw)  # the user's raw data; preprocessed and results stay in OUT
            (out / "raw").rmdir()
        did, name, raw = _prepare(args, roots, out / "logs" / "data.log")
        result["dataset"] = {"id": did, "name": name, "raw": str(raw)}
        reasons = arms.requirements(raw)
        methods = [m for m in args.methods if not reasons[m]]
        for m in args.methods:
            if reasons[m]:
                result["skipped"][m] = reasons[m]
                print(f"skip {m}: {reasons[m]}", flush=True)
        with _logged(out / "logs" / "data.log", args.verbose):
            for plans in dict.fromkeys(arms.PLANS[m] for m in methods):  # the plans the chosen methods need
                align = ["--align", "rigid"] if plans == arms.ALIGNED else []
                call_command("plan_and_preprocess", "main_plan_and_preprocess",
                             ["-d", str(did), "-c", arms.CONFIG, "-pl", "nnUNetPlannerCPU", "-overwrite_plans_name",
                              plans, "-np", "2", *align])
        result["times"]["data_s"] = round(time.time() - t0, 1)
        print(f"{name}: data ready ({time.time() - t0:.0f} s); methods {' '.join(methods) or 'none'}; seeds "
              f"{' '.join(map(str, args.seeds))}; budgets {'quick' if args.quick else 'default'}", flush=True)
        bench = arms.Bench(did, name, raw, out, args.device, budget, FLAGS, args.labelled_subjects,
                           STAMP_HORIZON_DAYS)
        for seed in args.seeds:
            for m in methods:
                t = time.time()
                run = {"method": m, "seed": seed}
                try:
                    with _logged(out / "logs" / f"{m}_s{seed}.log", args.verbose):
                        run["comparisons"], run["notes"] = arms.ARMS[m](bench, seed)
                except Exception as e:  # one broken arm must not stop the others; KeyboardInterrupt does
                    run["error"] = f"{type(e).__name__}: {e}"
                run["seconds"] = round(time.time() - t, 1)
                result["runs"].append(run)
                save()
                shown = run.get("error") or "; ".join(
                    f"{c['metric']} {c['method_value']:.4g} vs {c['baseline']} {c['baseline_value']:.4g}"
                    for c in run["comparisons"])
                print(f"seed {seed} {m:8s} {'FAILED: ' if 'error' in run else ''}{shown} [{run['seconds']:.0f} s; "
                      f"elapsed {time.time() - t0:.0f} s]", flush=True)
    for m in methods:
        secs = [r["seconds"] for r in result["runs"] if r["method"] == m]
        result["times"][f"{m}_s_per_seed"] = round(float(np.mean(secs)), 1)
    save()
    print(f"\n{name}: {len(args.seeds)} seed(s), {'quick' if args.quick else 'default'} budgets, "
          f"{time.time() - t0:.0f} s in all (data + preprocessing {result['times']['data_s']:.0f} s; per seed: "
          + ", ".join(f"{m} {result['times'][f'{m}_s_per_seed']:.0f} s" for m in methods) + ")\n")
    print(table(result["summary"], len(args.seeds)))
    notes = dict.fromkeys(n for r in result["runs"] for n in r.get("notes", []))
    for line in [*notes, *(f"skipped {m}: {why}" for m, why in result["skipped"].items()),
                 *(f"failed {r['method']} seed {r['seed']}: {r['error']}" for r in result["runs"] if "error" in r)]:
        print(f"- {line}")
    (out / MARKER).write_text("finished: made by bench/methods.py, replaced by its next run\n")
    print(f"\nwritten {out / 'methods.json'}")
    return 1 if any("error" in r for r in result["runs"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
