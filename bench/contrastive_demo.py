"""Contrastive representation methods on the synthetic demo cohort, one table.

LEARNER: weighted-contrastive pretraining vs the MSE-only baseline (--contrastive-weight 0), each followed by the
frozen-encoder change classifier: 3-way change macro-F1 on the test pairs and Spearman ρ between
consecutive-visit embedding distance and |Δscore|. ClinImCL: MCCD (within subjects) vs mean distance between
subjects on the test split, trained encoder vs a random-initialised one. Everything runs through the CLIs
(train → predict → evaluate) and is repeated over seeds, since the test split has few subjects.

    nice -n 10 python bench/contrastive_demo.py                        # seeds 0 1: ~10 min on 2 loaded cores
    nice -n 10 python bench/contrastive_demo.py --seeds 0 1 2 3 --reuse # the README's table (same --out)
    nice -n 10 python bench/contrastive_demo.py --seeds 0 --epochs 4    # quicker look

Runs are deterministic per seed (single-threaded, in-process loading), so seeds can be added later with --reuse.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/longnet_contrastive_bench", help="work folder (replaced)")
    p.add_argument("--train-subjects", type=int, default=40)
    p.add_argument("--test-subjects", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (the README reports 0-3)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic cohort")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--iters", type=int, default=25, help="iterations per epoch")
    p.add_argument("--only", choices=["learner", "clinimcl"], default=None)
    p.add_argument("--learner-args", dest="learner_args", default="",
                   help="more LEARNERTrainer options for both variants, e.g. \"--widths 16 32 64 128\"")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reuse", action="store_true", help="keep the dataset already preprocessed under --out "
                   "(same --train/--test-subjects and --data-seed assumed)")
    p.add_argument("--verbose", action="store_true", help="show the commands' own output")
    return p


def _quiet(verbose: bool):
    """Hide the commands' output (shown on failure) unless --verbose."""
    return contextlib.nullcontext() if verbose else _Redirect(io.StringIO())


class _Redirect:
    def __init__(self, buf):
        self.buf = buf
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        self.stack.enter_context(contextlib.redirect_stdout(self.buf))
        self.stack.enter_context(contextlib.redirect_stderr(self.buf))
        return self

    def __exit__(self, *exc):
        self.stack.close()
        if exc[0] is not None:
            sys.stderr.write(self.buf.getvalue()[-4000:])
        return False


MARKER = ".longnet_contrastive_bench"


def _fresh_folder(out: Path) -> None:
    """Empty `out` if this script made it; refuse to touch a foreign non-empty folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"{out} exists, is not empty and was not made by this script; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by bench/contrastive_demo.py; replaced by its next run\n")


def _stat(values) -> str:
    v = np.asarray([x for x in values if x == x], dtype=float)
    if not len(v):
        return "nan"
    fmt = ".3f" if abs(v.mean()) >= 0.01 else ".2e"  # a random-init encoder has distances ~1e-4
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("LONGNET_N_PROC_DA", "0")  # inputs are cached in-process; no worker copies
    os.environ.setdefault("LONGNET_COMPILE", "0")
    import torch

    torch.set_num_threads(1)  # on 2 shared cores one thread is ~3x faster than two for these small networks
    from longnet.demo.recipes import CONFIG, SETTINGS, DemoContext, call_command, demo_environment
    from longnet.demo.synthetic import DEFAULT_DATASET_ID, dataset_folder_name, generate_demo_dataset

    t0 = time.time()
    out = Path(args.out).resolve()
    name = dataset_folder_name(DEFAULT_DATASET_ID)
    reuse = args.reuse and (out / "preprocessed" / name / "splits_final.json").is_file()
    if not reuse:
        _fresh_folder(out)
    settings = dataclasses.replace(SETTINGS["default"], n_subjects_train=args.train_subjects,
                                   n_subjects_test=args.test_subjects, epochs=args.epochs, iters_per_epoch=args.iters)
    learner, clin = [], []
    with demo_environment(out) as roots:
        folder = Path(roots["LONGNET_RAW"]) / name
        with _quiet(args.verbose):
            if not reuse:
                folder = generate_demo_dataset(roots["LONGNET_RAW"], args.train_subjects, args.test_subjects,
                                               settings.shape, seed=args.data_seed)
                call_command("plan_and_preprocess", "main_plan_and_preprocess",
                             ["-d", str(DEFAULT_DATASET_ID), "-c", CONFIG, "-np", "2"])
        print(f"dataset ready ({time.time() - t0:.0f} s)", flush=True)
        ctx = DemoContext(out, DEFAULT_DATASET_ID, name, folder, args.device, settings, out / "pictures")
        ctx.pictures.mkdir(exist_ok=True)
        for seed in args.seeds:
            if args.only in (None, "learner"):
                from longnet_learner.demo import run_variant

                for variant, weight in (("weighted", 1.0), ("mse_only", 0.0)):
                    with _quiet(args.verbose):
                        r = run_variant(ctx, f"{variant}_s{seed}", weight, seed=seed,
                                        extra=tuple(args.learner_args.split()))
                    r["variant"] = variant
                    learner.append(r)
                    print(f"seed {seed} LEARNER {variant:9s} macro-F1 {r['macro_F1']:.3f} over the classes present "
                          f"({'/'.join(r['present_classes'])}; all 3 classes: {r['macro_F1_all_classes']:.3f}) Spearman {r['spearman']:.3f} "
                          f"[{time.time() - t0:.0f} s]", flush=True)
            if args.only in (None, "clinimcl"):
                from longnet_clinimcl.demo import random_init_reference, run_clinimcl

                with _quiet(args.verbose):
                    trained, _ = run_clinimcl(ctx, seed=seed, name=f"ClinImCL_s{seed}")
                    rand = random_init_reference(ctx, seed=seed, name=f"ClinImCL_random_s{seed}")
                for tag, r in (("trained", trained), ("random init", rand)):
                    r.update(seed=seed, variant=tag)
                    clin.append(r)
                    print(f"seed {seed} ClinImCL {tag:11s} MCCD {r['MCCD']:.3g} between "
                          f"{r['between_subject_distance']:.3g} ratio {r['ratio']:.3f} [{time.time() - t0:.0f} s]",
                          flush=True)
    lines = [f"\n{args.train_subjects} train / {args.test_subjects} test subjects, seeds {args.seeds}, "
             f"{args.epochs}x{args.iters} iterations, {time.time() - t0:.0f} s\n"]
    if learner:
        counts = learner[0]["target_counts"]
        lines.append(f"LEARNER (test pairs: {learner[0]['num_pairs']}, targets {counts}; mean ± sd over seeds)")
        lines.append(f"{'variant':10s} | {'macro-F1 (present)':18s} | {'macro-F1 (all 3)':18s} | "
                     f"{'Spearman ρ':16s} | {'ρ between subj.':16s} | {'PC1 share':16s} | MCCD")
        for v in ("weighted", "mse_only"):
            rs = [r for r in learner if r["variant"] == v]
            lines.append(f"{v:10s} | {_stat([r['macro_F1'] for r in rs]):18s} | "
                         f"{_stat([r['macro_F1_all_classes'] for r in rs]):18s} | "
                         f"{_stat([r['spearman'] for r in rs]):16s} | "
                         f"{_stat([r.get('spearman_between', np.nan) for r in rs]):16s} | "
                         f"{_stat([r.get('first_component_share', np.nan) for r in rs]):16s} | "
                         f"{_stat([r['MCCD'] for r in rs])}")
        lines.append("(Spearman ρ: consecutive-visit distance vs |Δscore|, the target; ρ between subj.: "
                     "distance of scans of different subjects vs their score gap, what the weighted loss trains; "
                     "PC1 share: variance of the unit embeddings along their first principal component)")
        w = {r["seed"]: r for r in learner if r["variant"] == "weighted"}
        b = {r["seed"]: r for r in learner if r["variant"] == "mse_only"}
        wins_f1 = sum(w[s]["macro_F1"] > b[s]["macro_F1"] for s in w if s in b)
        wins_rho = sum(w[s]["spearman"] > b[s]["spearman"] for s in w if s in b)
        lines.append(f"weighted > MSE-only: macro-F1 in {wins_f1}/{len(w)} seeds, Spearman in {wins_rho}/{len(w)}")
    if clin:
        lines.append("\nClinImCL (test split; cosine distances of z; mean ± sd over seeds)")
        lines.append(f"{'encoder':11s} | {'MCCD (within)':16s} | {'between subjects':16s} | MCCD / between")
        for v in ("trained", "random init"):
            rs = [r for r in clin if r["variant"] == v]
            lines.append(f"{v:11s} | {_stat([r['MCCD'] for r in rs]):16s} | "
                         f"{_stat([r['between_subject_distance'] for r in rs]):16s} | "
                         f"{_stat([r['ratio'] for r in rs])}")
    text = "\n".join(lines)
    print(text)
    (out / "contrastive_bench.json").write_text(json.dumps({"learner": learner, "clinimcl": clin,
                                                           "args": vars(args)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
