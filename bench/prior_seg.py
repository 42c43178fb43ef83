"""Prior-conditioned segmentation on the synthetic demo cohort: PriorConcatTrainer and DiffWeightingTrainer vs
nnUNetTrainer at equal budgets (EPOCHS × ITERS optimiser steps, same plans, same optimiser, same seeds).

Recipe (`--recipe adam`, default): every arm uses Adam 1e-3 with nnU-Net's poly decay — the baseline is the
registered nnU-Net variant nnUNetTrainerVanillaAdam1en3, the prior trainers get `--optimizer adam --lr 1e-3` —
because nnU-Net's SGD learned no foreground at all in 200 steps on this cohort (measured); `--recipe sgd` runs
nnUNetTrainer and the trainers' default SGD instead.

Data: `longnet_demo`'s cohort (lesions that appear and grow, ventricles, 2–6 visits), preprocessed with rigid
intra-subject alignment; the plans' topology is kept and narrowed to BASE_FEATURES (8) in the first stage so a
CPU step is fast. Every arm trains on fold 'all' of the training subjects, predicts every test visit
(`longnet_predict`; the prior trainers chain each test subject's visits with `--patients`) and is scored by
`longnet_evaluate --patients`: lesion Dice, lesion-wise detection F1, new-lesion detection (recall / F1) and
|ΔASPC| of the lesion volume between consecutive visits. Reported as mean ± sd over seeds, plus diagnostics
that explain the differences: lesion Dice on first visits vs follow-ups (a first visit has no prior), the final
training loss, and for DiffWeightingTrainer the mean |γ| of its fusion blocks (how much prior it mixes in).

    python3 bench/prior_seg.py [--out /tmp/prior_seg] [--seeds 0 1 2] [--epochs 15 --iters 20] [--recipe adam|sgd]
    python3 bench/prior_seg.py --reuse --pretrained      # + LongRep-pretrained starts of both prior trainers
    python3 bench/prior_seg.py --quick                   # pipeline check, numbers meaningless
    python3 bench/prior_seg.py --rescore                 # score OUT's existing predictions again (no training)

Writes OUT/prior_seg.json and prints a markdown table. Two runs must not share an OUT.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longrep_oneshot import write_bench_plans  # noqa: E402  the same narrowed 3d_fullres plans

DATASET_ID = 990
CONFIG = "3d_fullres"
PLANS = "PriorSegBenchPlans"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/prior_seg", help="work folder (replaced unless --reuse)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--subjects", type=int, default=12, help="training subjects")
    p.add_argument("--test-subjects", dest="test_subjects", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 40, 32])
    p.add_argument("--data-seed", dest="data_seed", type=int, default=3,
                   help="cohort seed (default 3: the first seed >= 1 whose 4 test subjects hold >= 3 new lesions, "
                        "counted on the reference labels before any training; seed 0 has 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (every arm)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--iters", type=int, default=20, help="iterations per epoch")
    p.add_argument("--base-features", dest="base_features", type=int, default=8)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a loaded 2-core machine two threads made a step of this "
                        "network ~9x slower, measured)")
    p.add_argument("--arms", nargs="+", default=["nnunet", "concat", "diff"],
                   choices=["nnunet", "concat", "concat_seg", "diff"],
                   help="nnunet: nnUNetTrainer; concat: PriorConcatTrainer (image prior); concat_seg: "
                        "PriorConcatTrainer --prior-seg gt; diff: DiffWeightingTrainer")
    p.add_argument("--prior", default="immediate", choices=["immediate", "random"], help="training prior")
    p.add_argument("--recipe", default="adam", choices=["adam", "sgd"],
                   help="optimiser of EVERY arm: adam (default) = Adam 1e-3, L2 3e-5, poly decay, i.e. "
                        "nnUNetTrainerVanillaAdam1en3 for the baseline and --optimizer adam --lr 1e-3 for the prior "
                        "trainers; sgd = nnU-Net's SGD 1e-2 (nnUNetTrainer), which learned no foreground at all in "
                        "200 steps on this cohort (test Dice 0.000 for both structures, 2 seeds)")
    p.add_argument("--pretrained", action="store_true",
                   help="also pretrain LongRepPretrainer once (--pt-epochs × --pt-iters) and train the prior arms "
                        "from it (--pretrained-weights), for every seed")
    p.add_argument("--pt-epochs", dest="pt_epochs", type=int, default=10)
    p.add_argument("--pt-iters", dest="pt_iters", type=int, default=20)
    p.add_argument("--reuse", action="store_true", help="keep OUT's data and earlier rows; run only missing rows")
    p.add_argument("--quick", action="store_true", help="tiny schedule (pipeline check)")
    p.add_argument("--rescore", action="store_true",
                   help="run longnet_evaluate again on every prediction folder in OUT and rewrite the metric columns "
                        "of its rows (after a change of the metric definitions); trains nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.iters, args.subjects, args.test_subjects, args.seeds = 1, 2, 4, 2, [0]
        args.pt_epochs, args.pt_iters = 1, 2
    return args


ARMS = {"nnunet": ("nnUNetTrainer", []), "concat": ("PriorConcatTrainer", []),
        "concat_seg": ("PriorConcatTrainer", ["--prior-seg", "gt"]), "diff": ("DiffWeightingTrainer", [])}


def _numbers(summary_file: Path, subjects: dict[str, list[str]]) -> dict:
    s = json.loads(summary_file.read_text())
    les = s["lesions"]
    key = ",".join(str(v) for v in les["label_values"])
    o = les["overall"]
    first = {cs[0] for cs in subjects.values()}
    per_visit = les["per_visit"]

    def mean_dice(cases):
        vals = [per_visit[c]["Dice"] for c in cases if c in per_visit and per_visit[c]["Dice"] == per_visit[c]["Dice"]]
        return float(np.mean(vals)) if vals else float("nan")

    lesion_dice = s["mean"].get(key, {}).get("Dice", o["Dice"])
    return {"lesion_dice": lesion_dice, "F1": o["F1"], "precision": o["precision"], "recall": o["recall"],
            "new_recall": o["new_lesion_recall"], "new_F1": o["new_lesion_F1"], "n_new_ref": o["n_new_ref"],
            "aspc_abs_diff": o["ASPC_abs_difference"], "NSD": o["NSD"], "HD95": o["HD95"],
            "dice_first_visits": mean_dice(first), "dice_follow_ups": mean_dice(set(per_visit) - first),
            "foreground_dice": s["foreground_mean"]["Dice"]}


def _final_train_loss(fold_dir: Path) -> float:
    lines = "".join(p.read_text() for p in sorted(fold_dir.glob("training_log*.txt"))).splitlines()
    found = [float(m.group(1)) for line in lines if (m := re.search(r"epoch \d+: train_loss (-?[\d.]+)", line))]
    return found[-1] if found else float("nan")


def _gamma(fold_dir: Path) -> float | None:
    import torch

    ckpt = fold_dir / "checkpoint_final.pth"
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["network_weights"]
    g = [v.abs().mean().item() for k, v in weights.items() if k.endswith(".gamma")]
    return float(np.mean(g)) if g else None


def rescore(out: Path) -> int:
    """Score every prediction folder of an earlier run again; timings, losses and γ stay as measured."""
    from longnet.demo.recipes import call_command, demo_environment

    result_file = out / "prior_seg.json"
    saved = json.loads(result_file.read_text())
    rows = saved["runs"]
    with demo_environment(out) as roots:
        raw = Path(roots["LONGNET_RAW"]) / f"Dataset{DATASET_ID}_LongDemo"
        test_subjects = json.loads((raw / "patientsTs.json").read_text())
        for name, row in rows.items():
            if name.startswith("_"):
                continue
            for suffix, folder in (("", row["arm"]), ("_no_prior", f"{row['arm']}_no_prior")):
                pred = out / "predictions" / folder / f"seed{row['seed']}"
                if not pred.is_dir():
                    continue
                call_command("evaluate", "main", [str(raw / "labelsTs"), str(pred), "-d", str(DATASET_ID),
                                                  "--patients", str(raw / "patientsTs.json")])
                numbers = _numbers(pred / "summary.json", test_subjects)
                row.update(numbers if not suffix else {f"{k}_no_prior": numbers[k] for k in (
                    "lesion_dice", "F1", "new_recall", "dice_follow_ups")})
    arms = list(dict.fromkeys(r["arm"] for k, r in rows.items() if not k.startswith("_")))
    saved["table"] = summarize(rows, arms)
    result_file.write_text(json.dumps(saved, indent=1))
    print("\n" + saved["table"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.rescore:
        return rescore(Path(args.out).resolve())
    os.environ.setdefault("LONGNET_COMPILE", "0")
    os.environ.setdefault("LONGNET_N_PROC_DA", "1")  # one loader worker: augmentation is ~15 % of a CPU step
    import torch

    from longnet.demo.recipes import call_command, demo_environment
    from longnet.demo.synthetic import generate_demo_dataset

    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out).resolve()
    if out.exists() and not args.reuse:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "prior_seg.json"
    rows: dict[str, dict] = json.loads(result_file.read_text())["runs"] if args.reuse and result_file.is_file() else {}
    t_start = time.time()
    with demo_environment(out) as roots:
        raw = Path(roots["LONGNET_RAW"]) / f"Dataset{DATASET_ID}_LongDemo"
        pre = next(Path(roots["LONGNET_PREPROCESSED"]).glob(f"Dataset{DATASET_ID}_*"), None)
        t0 = time.time()
        if not (args.reuse and pre is not None and (pre / f"{PLANS}.json").is_file()):
            raw = generate_demo_dataset(roots["LONGNET_RAW"], args.subjects, args.test_subjects, args.shape,
                                        seed=args.data_seed, dataset_id=DATASET_ID)
            call_command("plan_and_preprocess", "main_plan_and_preprocess",
                         ["-d", str(DATASET_ID), "-c", CONFIG, "-np", "2", "--align", "rigid"])
            pre = next(Path(roots["LONGNET_PREPROCESSED"]).glob(f"Dataset{DATASET_ID}_*"))
            write_bench_plans(pre / "nnUNetPlans.json", pre / f"{PLANS}.json", args.base_features)
        data_s = time.time() - t0
        test_subjects = json.loads((raw / "patientsTs.json").read_text())
        results = Path(roots["LONGNET_RESULTS"])
        common = [str(DATASET_ID), CONFIG, "all", "-p", PLANS, "-device", args.device, "--disable-final-validation",
                  "--val-iters", "1", "--no-validation-mirroring", "--epochs", str(args.epochs),
                  "--iters-per-epoch", str(args.iters)]
        ckpt = out / "pretrained" / f"longrep_{args.pt_epochs}x{args.pt_iters}.pth"
        arms = [(a, ARMS[a][0], ARMS[a][1]) for a in args.arms]
        if args.recipe == "adam":
            arms = [(a, "nnUNetTrainerVanillaAdam1en3" if t == "nnUNetTrainer" else t,
                     extra if t == "nnUNetTrainer" else extra + ["--optimizer", "adam", "--lr", "1e-3"])
                    for a, t, extra in arms]
        if args.pretrained:
            if not ckpt.is_file():
                t = time.time()
                call_command("train", "main", [str(DATASET_ID), CONFIG, "all", "-p", PLANS, "-tr", "LongRepPretrainer",
                                               "-device", args.device, "--epochs", str(args.pt_epochs),
                                               "--iters-per-epoch", str(args.pt_iters), "--val-iters", "2"])
                ckpt.parent.mkdir(exist_ok=True)
                shutil.copyfile(next(results.glob(f"*/LongRepPretrainer__{PLANS}__{CONFIG}/fold_all/"
                                                  "checkpoint_final.pth")), ckpt)
                rows["_pretraining"] = {"train_s": round(time.time() - t, 1)}
            pt = ["--pretrained-weights", str(ckpt)]
            arms += [(f"{a}+longrep", ARMS[a][0], ARMS[a][1] + pt) for a in args.arms if a != "nnunet"]
        for arm, trainer, extra in arms:
            prior = ["--prior", args.prior] if not trainer.startswith("nnUNetTrainer") else []
            for seed in args.seeds:
                name = f"{arm}/seed{seed}"
                if name in rows:
                    continue
                t = time.time()
                call_command("train", "main", common + ["-tr", trainer, "--seed", str(seed)] + prior + extra)
                train_s = time.time() - t
                model = next(results.glob(f"*/{trainer}__{PLANS}__{CONFIG}"))
                fold = model / "fold_all"
                pred = out / "predictions" / arm / f"seed{seed}"
                t = time.time()
                call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-m", str(model), "-f",
                                                 "all", "-device", args.device, "--disable_tta", "--patients",
                                                 str(raw / "patientsTs.json")])
                call_command("evaluate", "main", [str(raw / "labelsTs"), str(pred), "-d", str(DATASET_ID),
                                                  "--patients", str(raw / "patientsTs.json")])
                rows[name] = {**_numbers(pred / "summary.json", test_subjects), "arm": arm, "seed": seed,
                              "train_s": round(train_s, 1), "predict_eval_s": round(time.time() - t, 1),
                              "final_train_loss": _final_train_loss(fold), "mean_abs_gamma": _gamma(fold)}
                if not trainer.startswith("nnUNetTrainer"):  # ablation: the same model, every visit its own prior at test time
                    blind = out / "predictions" / f"{arm}_no_prior" / f"seed{seed}"
                    call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(blind), "-m", str(model),
                                                     "-f", "all", "-device", args.device, "--disable_tta"])
                    call_command("evaluate", "main", [str(raw / "labelsTs"), str(blind), "-d", str(DATASET_ID),
                                                      "--patients", str(raw / "patientsTs.json")])
                    no_prior = _numbers(blind / "summary.json", test_subjects)
                    rows[name].update({f"{k}_no_prior": no_prior[k] for k in ("lesion_dice", "F1", "new_recall",
                                                                               "dice_follow_ups")})
                result_file.write_text(json.dumps({"settings": vars(args), "runs": rows}, indent=1))
    table = summarize(rows, [a for a, _, _ in arms])
    print("\n" + table)
    wall = time.time() - t_start
    result_file.write_text(json.dumps({"settings": vars(args), "data_s": round(data_s, 1), "wall_s": round(wall, 1),
                                       "runs": rows, "table": table}, indent=1))
    print(f"\nwall time {wall / 60:.1f} min (data {data_s:.0f} s); written {result_file}")
    return 0


COLUMNS = (("lesion_dice", "lesion Dice"), ("lesion_dice_per_seed", "lesion Dice per seed"), ("F1", "detection F1"), ("new_recall", "new-lesion recall"),
           ("new_F1", "new-lesion F1"), ("aspc_abs_diff", "|ΔASPC| lesion"), ("dice_first_visits", "Dice 1st visits"),
           ("dice_follow_ups", "Dice follow-ups"), ("dice_follow_ups_no_prior", "Dice follow-ups, no prior at test"),
           ("final_train_loss", "final train loss"),
           ("mean_abs_gamma", "mean |γ|"), ("train_s", "train s"))


def summarize(rows: dict[str, dict], arms: list[str]) -> str:
    """Markdown table: mean ± sd over seeds per arm."""
    lines = ["| arm | seeds | " + " | ".join(c for _, c in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for arm in arms:
        runs = [r for k, r in rows.items() if not k.startswith("_") and r["arm"] == arm]
        if not runs:
            continue
        cells = []
        for key, _ in COLUMNS:
            if key == "lesion_dice_per_seed":
                cells.append(" / ".join(f"{r['lesion_dice']:.2f}" for r in sorted(runs, key=lambda r: r["seed"])))
                continue
            vals = np.array([r[key] for r in runs if r.get(key) is not None], dtype=float)
            vals = vals[np.isfinite(vals)]
            if not vals.size:
                cells.append("–")
            elif key == "train_s":
                cells.append(f"{vals.mean():.0f}")
            else:
                cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}" if vals.size > 1 else f"{vals.mean():.3f}")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    n_new = next((r["n_new_ref"] for k, r in rows.items() if not k.startswith("_")), None)
    if n_new is not None:
        lines.append(f"\n(new reference lesions in the test visits: {n_new})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
