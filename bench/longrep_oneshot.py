"""One-shot segmentation on the synthetic demo cohort: LongRep (pretrain + finetune) vs nnUNetTrainer from random
initialisation, with the labels of ONE training subject (`--labelled-subjects 1`, the same subject for both arms;
more subjects for the few-shot setting).

Budget: both arms get the same number of finetuning/training optimizer steps (EPOCHS × ITERS); LongRep additionally
spends PT_EPOCHS × PT_ITERS self-supervised steps on unlabelled visit pairs of all training subjects (reported as
extra compute; `--matched-compute` also trains the baseline for that many more supervised steps). Both arms then
predict the test subjects' visits and `longnet_evaluate` scores them: mean foreground Dice and ASPC (absolute
symmetric percent change of each structure's volume between consecutive visits; reference ASPC from the ground
truth printed alongside).

    nice -n 10 python3 bench/longrep_oneshot.py [--out /tmp/longrep_oneshot] [--quick]
    python3 bench/longrep_oneshot.py --reuse --init-arms --labelled-seed 1 [--transfer all] [--epochs 30]
    python3 bench/longrep_oneshot.py --out /tmp/longrep_stable --anatomy-time-scale 0.1 ...   # stable anatomy

`--init-arms` isolates the initialisation (random vs pretrained, Adam, no L_cs); `--reuse` keeps the data, the
pretraining checkpoints (OUT/pretrained/, one per budget and `--pt-args`) and the table, and adds rows.
Prints one table and writes OUT/longrep_oneshot.json. Default sizes fit ~10 min on 2 loaded CPU cores. Two runs
must not share an OUT (they train into the same results folder).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 990
CONFIG = "3d_fullres"
PLANS = "LongRepBenchPlans"


def write_bench_plans(src: Path, dest: Path, base_features: int) -> None:
    """The dataset's own plans (patch, batch, topology, data identifier) with narrower stages."""
    plans = json.loads(src.read_text())
    plans["plans_name"] = dest.stem
    ak = plans["configurations"][CONFIG]["architecture"]["arch_kwargs"]
    ak["features_per_stage"] = [min(base_features * 2 ** i, 320) for i in range(ak["n_stages"])]
    dest.write_text(json.dumps(plans, indent=1))


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/longrep_oneshot", help="work folder (replaced)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--subjects", type=int, default=12, help="training subjects (1 labelled, all used for pairs)")
    p.add_argument("--test-subjects", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 40, 32])
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--anatomy-time-scale", dest="anatomy_time_scale", type=float, default=1.0,
                   help="< 1: the cohort's structures change that much slower between visits (0.1: nearly stable "
                        "anatomy, the setting LongRep assumes; 1: the demo cohort)")
    p.add_argument("--labelled-seed", type=int, default=0, help="picks the labelled subject(s)")
    p.add_argument("--labelled-subjects", type=int, default=1,
                   help="labelled training subjects (1 = one-shot; more = the paper's few-shot setting)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--epochs", type=int, default=10, help="supervised epochs (both arms)")
    p.add_argument("--iters", type=int, default=20, help="iterations per supervised epoch (both arms)")
    p.add_argument("--pt-epochs", type=int, default=10, help="LongRep pretraining epochs")
    p.add_argument("--pt-iters", type=int, default=20, help="LongRep pretraining iterations per epoch")
    p.add_argument("--base-features", type=int, default=8,
                   help="U-Net width of the benchmark plans (first stage; doubles per stage, nnU-Net plans 32): "
                        "the planned topology is kept, only narrowed so that a CPU step takes < 1 s")
    p.add_argument("--proj-width", type=int, default=256, help="projector width W (paper 2048)")
    p.add_argument("--num-patches", type=int, default=128)
    p.add_argument("--transfer", default="no-output", choices=["all", "no-output"],
                   help="LongRepFinetuner --transfer of the pretrained arms (default no-output: the output stage "
                        "starts fresh; all: the paper's full transfer)")
    p.add_argument("--pt-args", default="", help="more LongRepPretrainer options (e.g. \"--gamma-cov 8e-3\"); "
                   "pretraining checkpoints are kept per budget and options, so --reuse runs compare them")
    p.add_argument("--ft-args", default="--optimizer sgd --cs-mode sum",
                   help="extra LongRepFinetuner options (default: nnU-Net's SGD recipe + L_cs summed each step)")
    p.add_argument("--matched-compute", action="store_true",
                   help="also run the baseline with pretraining's steps added to its schedule")
    p.add_argument("--ablations", action="store_true",
                   help="also finetune: pretrained without L_cs, random init with L_cs, and both arms with the "
                        "paper's Adam 2e-4 recipe (separates the effect of the initialisation from that of L_cs)")
    p.add_argument("--init-arms", action="store_true",
                   help="only the two arms that isolate the initialisation (LongRepFinetuner, Adam 2e-4, no L_cs: "
                        "random vs pretrained) for --labelled-seed; with --reuse, adds rows to the table")
    p.add_argument("--reuse", action="store_true",
                   help="keep OUT's dataset, pretraining checkpoint and table from an earlier run; run only the "
                        "arms (rows with the same name are replaced)")
    p.add_argument("--quick", action="store_true", help="tiny schedule (pipeline check, numbers meaningless)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.iters, args.pt_epochs, args.pt_iters, args.subjects = 2, 4, 2, 4, 6
    return args


def _summary_numbers(summary_file: Path) -> dict:
    s = json.loads(summary_file.read_text())
    out = {"dice": s["foreground_mean"]["Dice"], "dice_per_label": {k: v["Dice"] for k, v in s["mean"].items()}}
    lon = (s.get("longitudinal") or {}).get("mean") or {}
    out["aspc"] = {k: v.get("ASPC_pred") for k, v in lon.items()}
    out["aspc_ref"] = {k: v.get("ASPC_ref") for k, v in lon.items()}
    out["aspc_abs_diff"] = {k: v.get("ASPC_abs_difference") for k, v in lon.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    os.environ.setdefault("LONGNET_COMPILE", "0")
    import shutil

    import torch

    from longnet.demo.recipes import call_command, demo_environment
    from longnet.demo.synthetic import generate_demo_dataset

    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out).resolve()
    if out.exists() and not args.reuse:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    rows: dict[str, dict] = {}
    previous = out / "longrep_oneshot.json"
    if args.reuse and previous.is_file():  # keep the arms measured before
        rows.update(json.loads(previous.read_text())["rows"])
    with demo_environment(out) as roots:
        t0 = time.time()
        raw = Path(roots["LONGNET_RAW"]) / f"Dataset{DATASET_ID}_LongDemo"
        pre = next(Path(roots["LONGNET_PREPROCESSED"]).glob(f"Dataset{DATASET_ID}_*"), None)
        if not (args.reuse and pre is not None and (pre / f"{PLANS}.json").is_file()):
            raw = generate_demo_dataset(roots["LONGNET_RAW"], args.subjects, args.test_subjects, args.shape,
                                        seed=args.data_seed, dataset_id=DATASET_ID,
                                        anatomy_time_scale=args.anatomy_time_scale)
            call_command("plan_and_preprocess", "main_plan_and_preprocess",
                         ["-d", str(DATASET_ID), "-c", CONFIG, "-np", "2", "--align", "rigid"])
            pre = next(Path(roots["LONGNET_PREPROCESSED"]).glob(f"Dataset{DATASET_ID}_*"))
            write_bench_plans(pre / "nnUNetPlans.json", pre / f"{PLANS}.json", args.base_features)
        times["data"] = time.time() - t0
        common = [str(DATASET_ID), CONFIG, "all", "-p", PLANS, "-device", args.device, "--disable-final-validation",
                  "--val-iters", "2", "--no-validation-mirroring"]
        budget = ["--labelled-subjects", str(args.labelled_subjects), "--labelled-seed", str(args.labelled_seed)]
        steps = args.epochs * args.iters
        # row names carry what differs from the one-shot 200-step default, so --reuse runs add rows
        shots = (f", {args.labelled_subjects} labelled subjects" if args.labelled_subjects != 1 else "") + \
            (f", {steps} steps" if steps != 200 else "")
        sched = ["--epochs", str(args.epochs), "--iters-per-epoch", str(args.iters)]

        def run_arm(name: str, trainer: str, train_argv: list[str], pretrain: float = 0.0) -> None:
            t = time.time()
            call_command("train", "main", common + ["-tr", trainer] + train_argv)
            train_s = time.time() - t
            # results folders are per trainer: keep each arm's model apart by predicting right away
            pred = out / "predictions" / name
            t = time.time()
            call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID),
                                             "-c", CONFIG, "-p", PLANS, "-tr", trainer, "-f", "all", "-device",
                                             args.device, "--disable_tta"])
            call_command("evaluate", "main", [str(raw / "labelsTs"), str(pred), "-d", str(DATASET_ID),
                                              "--patients", str(raw / "patientsTs.json")])
            rows[name] = {**_summary_numbers(pred / "summary.json"), "train_s": round(train_s + pretrain, 1),
                          "predict_eval_s": round(time.time() - t, 1)}

        pt_tag = f"{args.pt_epochs}x{args.pt_iters}" + "".join(f"_{a.lstrip('-')}" for a in args.pt_args.split())
        pt_note = f", pretrain {pt_tag}" if pt_tag != "10x20" else ""  # rows of a non-default pretraining say so
        ckpt = out / "pretrained" / f"{pt_tag}.pth"
        if not args.init_arms:
            run_arm(f"nnUNetTrainer (random init){shots}", "nnUNetTrainer", sched + budget)
        pt_s = 0.0
        if not (args.reuse and ckpt.is_file()):
            t = time.time()
            call_command("train", "main", [str(DATASET_ID), CONFIG, "all", "-p", PLANS, "-tr", "LongRepPretrainer",
                                           "-device", args.device, "--epochs", str(args.pt_epochs),
                                           "--iters-per-epoch", str(args.pt_iters), "--proj-width",
                                           str(args.proj_width), "--num-patches", str(args.num_patches),
                                           "--val-iters", "2", *args.pt_args.split()])
            pt_s = time.time() - t
            ckpt.parent.mkdir(exist_ok=True)
            final = f"*/LongRepPretrainer__{PLANS}__{CONFIG}/fold_all/checkpoint_final.pth"
            shutil.copyfile(next(Path(roots["LONGNET_RESULTS"]).glob(final)), ckpt)
        pretrained = ["--pretrained-weights", str(ckpt), "--transfer", args.transfer]
        pt_note += f", transfer {args.transfer}"
        if not args.init_arms:
            run_arm(f"LongRep pretrain + finetune{shots}{pt_note}", "LongRepFinetuner",
                    sched + budget + pretrained + args.ft_args.split(), pretrain=pt_s)
        if args.matched_compute and not args.init_arms:
            total = args.epochs * args.iters + args.pt_epochs * args.pt_iters
            run_arm(f"nnUNetTrainer, matched compute{shots}", "nnUNetTrainer",
                    ["--epochs", str(args.epochs), "--iters-per-epoch", str(total // args.epochs)] + budget)
        if args.init_arms:
            adam_off = ["--optimizer", "adam", "--cs-mode", "off"]
            random_row = f"random init, no L_cs (Adam 2e-4), labelled seed {args.labelled_seed}{shots}"
            if random_row not in rows:  # deterministic: a --reuse run with another pretraining keeps it
                run_arm(random_row, "LongRepFinetuner", sched + budget + adam_off)
            run_arm(f"pretrained, no L_cs (Adam 2e-4), labelled seed {args.labelled_seed}{shots}{pt_note}",
                    "LongRepFinetuner", sched + budget + pretrained + adam_off)
        if args.ablations:
            sgd, adam = ["--optimizer", "sgd"], ["--optimizer", "adam"]
            for name, extra in (("pretrained, no L_cs (SGD)", pretrained + sgd + ["--cs-mode", "off"]),
                                ("random init + L_cs sum (SGD)", sgd + ["--cs-mode", "sum"]),
                                ("random init, no L_cs (Adam 2e-4)", adam + ["--cs-mode", "off"]),
                                ("pretrained, no L_cs (Adam 2e-4)", pretrained + adam + ["--cs-mode", "off"]),
                                ("pretrained + L_cs alternate (Adam 2e-4)", pretrained + adam + ["--cs-mode",
                                                                                                 "alternate"])):
                run_arm(name + shots + (pt_note if "pretrained" in name else ""), "LongRepFinetuner",
                        sched + budget + extra)
    _print_table(rows)
    result = {"settings": vars(args), "rows": rows, "data_s": round(times["data"], 1)}
    (out / "longrep_oneshot.json").write_text(json.dumps(result, indent=2))
    print(f"\nwritten {out / 'longrep_oneshot.json'}")
    return 0


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def _print_table(rows: dict[str, dict]) -> None:
    labels = sorted({k for r in rows.values() for k in r["dice_per_label"]})
    head = ["arm", "mean Dice"] + [f"Dice {k}" for k in labels] + [f"ASPC {k}" for k in labels] + \
        [f"|ΔASPC| {k}" for k in labels] + ["train s"]
    lines = [head]
    for name, r in rows.items():
        lines.append([name, _fmt(r["dice"])] + [_fmt(r["dice_per_label"].get(k)) for k in labels]
                     + [_fmt(r["aspc"].get(k)) for k in labels] + [_fmt(r["aspc_abs_diff"].get(k)) for k in labels]
                     + [f"{r['train_s']:.0f}"])
    ref = next(iter(rows.values()))["aspc_ref"]
    lines.append(["ground truth", "-"] + ["-" for _ in labels] + [_fmt(ref.get(k)) for k in labels]
                 + ["-" for _ in labels] + ["-"])
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(head))]
    print()
    for i, l in enumerate(lines):
        print(" | ".join(str(c).ljust(w) for c, w in zip(l, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
