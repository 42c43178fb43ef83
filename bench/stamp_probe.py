"""STAMP probe benchmark: test AUROC of `converter` for STAMP, the deterministic Siamese-MAE ablation and a
randomly initialised encoder, all probed with the same budget.

    python bench/stamp_probe.py [--out /tmp/stamp_bench] [--reuse] [--pretrain-seeds N] [--probe-seeds N]

Steps (in-process, through the real trainers and `longnet_predict`'s prediction code):
1. the synthetic demo cohort (`generate_demo_dataset`, default shape/params) with more subjects than the demo
   uses, so that the test split holds both `converter` classes; plan + preprocess 3d_fullres;
2. pretrain STAMPTrainer and STAMPTrainer --deterministic-mae (fold all, same seed, same budget);
3. for each encoder × probe seed: STAMPProbeTrainer (--encoder CKPT | --random-encoder), predict the test split,
   AUROC per visit and per subject (mean probability over the subject's visits).
Prints one table (mean ± std over probe seeds). Default budget: < 10 min on 2 loaded CPU cores.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DID = 992
NAME = "StampBench"
CONFIG = "3d_fullres"
TARGET = "converter"


def _root(var: str) -> Path:
    """A folder of the run's environment (set by `demo_environment` in main)."""
    return Path(os.environ[var])


def prepare_data(out: Path, n_train: int, n_test: int, seed: int, reuse: bool) -> Path:
    from longnet.demo.recipes import call_command
    from longnet.demo.synthetic import dataset_folder_name, generate_demo_dataset

    raw = _root("LONGNET_RAW") / dataset_folder_name(DID, NAME)
    pre = _root("LONGNET_PREPROCESSED") / dataset_folder_name(DID, NAME)
    if reuse and (pre / "nnUNetPlans_3d_fullres").is_dir():
        return raw
    for p in (raw, pre, out / "encoders"):  # encoders of an earlier dataset must not be reused with new data
        shutil.rmtree(p, ignore_errors=True)
    raw = generate_demo_dataset(raw.parent, n_subjects_train=n_train, n_subjects_test=n_test, seed=seed,
                                dataset_id=DID, name=NAME)
    call_command("plan_and_preprocess", "main_plan_and_preprocess", ["-d", str(DID), "-c", CONFIG, "-np", "2"])
    return raw


def _model_folder(trainer: str) -> Path:
    return _root("LONGNET_RESULTS") / f"Dataset{DID}_{NAME}" / f"{trainer}__nnUNetPlans__{CONFIG}"


def pretrain(out: Path, variant: str, seed: int, args) -> Path:
    """Pretrain one encoder; returns a copy of its final checkpoint (the model folder is reused)."""
    from longnet.demo.recipes import call_command

    budget = f"{args.preset}_{args.pretrain_epochs}x{args.pretrain_iters}x{args.pretrain_batch}"
    dest = out / "encoders" / f"{variant}_seed{seed}_{budget}.pth"
    if args.reuse and dest.is_file():
        return dest
    argv = [str(DID), CONFIG, "all", "-tr", "STAMPTrainer", "-device", "cpu", "--preset", args.preset,
            "--epochs", str(args.pretrain_epochs), "--iters-per-epoch", str(args.pretrain_iters),
            "--batch-size", str(args.pretrain_batch), "--seed", str(seed)]
    if variant == "siamese_mae":
        argv.append("--deterministic-mae")
    folder = _model_folder("STAMPTrainer")
    shutil.rmtree(folder, ignore_errors=True)
    call_command("train", "main", argv)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "fold_all" / "checkpoint_final.pth", dest)
    return dest


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    from longnet.evaluation.classification import classification_metrics

    return classification_metrics(y, p)["AUROC"]


def probe_once(out: Path, raw: Path, source: list[str], seed: int, args, target: str = TARGET,
               truth_csv: Path | None = None) -> dict:
    """Train one probe, predict the test split; AUROC/PR-AUC/balanced accuracy per visit, AUROC per subject
    (mean probability over the subject's visits; only for subject-level targets)."""
    import torch

    from longnet.demo.recipes import call_command
    from longnet.evaluation.classification import classification_metrics
    from longnet.io.model_folder import ModelFolder
    from longnet_stamp.predict import add_probe_arguments, predict_probe

    folder = _model_folder("STAMPProbeTrainer")
    shutil.rmtree(folder, ignore_errors=True)
    call_command("train", "main", [str(DID), CONFIG, "all", "-tr", "STAMPProbeTrainer", "-device", "cpu", "--target",
                                   target, "--horizon-days", str(args.horizon), "--epochs", str(args.probe_epochs),
                                   "--iters-per-epoch", str(args.probe_iters), "--batch-size", str(args.probe_batch),
                                   "--seed", str(seed), *source])
    parser = argparse.ArgumentParser()
    add_probe_arguments(parser)
    pargs = parser.parse_args(["--prior-seed", str(seed)])
    pargs.patients, pargs.visits, pargs.checkpoint = str(raw / "patientsTs.json"), None, "checkpoint_final.pth"
    pred_dir = out / "pred"
    predict_probe(ModelFolder(folder), ["all"], raw / "imagesTs", pred_dir, pargs, torch.device("cpu"))
    rows = list(csv.DictReader(open(pred_dir / "predictions.csv")))
    truth = {r["case"]: int(float(r[target])) for r in csv.DictReader(open(truth_csv or raw / "visitsTs.csv"))}
    y = np.array([truth[r["case"]] for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    yhat = np.array([int(r["predicted_class"]) for r in rows])
    m = classification_metrics(y, p, y_pred=yhat)
    subjects: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        subjects.setdefault(r["subject"], []).append(i)
    return {"AUROC_visit": m["AUROC"], "PR_AUC_visit": m["PR_AUC"], "bacc_visit": m["balanced_accuracy"],
            "F1_visit": m["F1"], **_subject_level(y, p, list(subjects.values()))}


def _subject_level(y: np.ndarray, p: np.ndarray, groups: list[list[int]]) -> dict:
    """AUROC of the mean probability per subject (NaN when the label varies within a subject)."""
    ys = np.array([y[idx[0]] for idx in groups])
    constant = all(len(set(y[idx].tolist())) == 1 for idx in groups)
    ps = np.array([p[idx].mean() for idx in groups])
    return {"AUROC_subject": _auroc(ys, ps) if constant else float("nan"), "n_visits": len(y),
            "n_subjects": len(groups), "pos_visits": int(y.sum()), "pos_subjects": int(ys.sum()) if constant else -1}


def oracle(raw: Path) -> dict:
    """How predictable `converter` is from one visit at all: logistic regression on the GROUND-TRUTH ventricle and
    lesion volume fractions (+ days) of the labelled training visits, evaluated on the test visits."""
    import SimpleITK as sitk
    from sklearn.linear_model import LogisticRegression

    def table(side: str):
        rows = []
        for r in csv.DictReader(open(raw / f"visits{side}.csv")):
            lab = raw / f"labels{side}" / f"{r['case']}.nii.gz"
            if lab.is_file():
                a = sitk.GetArrayFromImage(sitk.ReadImage(str(lab)))
                rows.append((r["case"], [(a == 1).mean() * 100, (a == 2).mean() * 100, float(r["days"]) / 1000],
                             int(float(r[TARGET]))))
        return rows

    train, test = table("Tr"), table("Ts")
    clf = LogisticRegression(max_iter=1000).fit([r[1] for r in train], [r[2] for r in train])
    y = np.array([r[2] for r in test])
    p = clf.predict_proba([r[1] for r in test])[:, 1]
    patients = json.loads((raw / "patientsTs.json").read_text())
    pos = {r[0]: i for i, r in enumerate(test)}
    groups = [[pos[c] for c in cs if c in pos] for cs in patients.values()]
    fit = np.array([r[2] for r in train])
    return {"AUROC_visit": _auroc(y, p), "AUROC_train_fit": _auroc(fit, clf.predict_proba([r[1] for r in train])[:, 1]),
            "AUROC_ventricles_test": _auroc(y, np.array([r[1][0] for r in test])),
            **_subject_level(y, p, [g for g in groups if g])}


def add_control_target(out: Path, raw: Path) -> Path:
    """Positive control visible in ONE scan: `low_score` = score below the training median, written into the
    preprocessed visits.json (what the trainer reads) and a copy of visitsTs.csv (the test truth)."""
    pre = _root("LONGNET_PREPROCESSED") / raw.name
    visits = json.loads((pre / "visits.json").read_text())
    median = float(np.median([v["meta"]["score"] for v in visits.values()]))
    for v in visits.values():
        v["meta"]["low_score"] = float(v["meta"]["score"] < median)
    (pre / "visits.json").write_text(json.dumps(visits))
    rows = list(csv.DictReader(open(raw / "visitsTs.csv")))
    dest = out / "visitsTs_control.csv"
    with open(dest, "w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "low_score"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "low_score": int(float(r["score"]) < median)})
    return dest


def _pretrain_log(path: Path) -> dict:
    import torch

    log = torch.load(path, weights_only=True)["logging"]
    return {k: float(np.mean(v[-3:])) for k, v in log.items() if k.startswith("train_") and v}


COLS = ["AUROC_visit", "AUROC_subject", "PR_AUC_visit", "bacc_visit", "F1_visit"]


def _table(title: str, results: dict[str, list[dict]]) -> dict:
    print(f"\n{title}")
    header = f"{'encoder':32s} " + " ".join(f"{c:>16s}" for c in COLS)
    print(header)
    print("-" * len(header))
    summary = {}
    for name, runs in results.items():
        cells, summary[name] = [], {}
        for c in COLS:
            vals = np.array([r.get(c, np.nan) for r in runs], dtype=float)
            ok = vals[np.isfinite(vals)]
            summary[name][c] = {"mean": float(ok.mean()) if len(ok) else None,
                                "std": float(ok.std()) if len(ok) else None, "values": vals.tolist()}
            cells.append((f"{ok.mean():.3f} ± {ok.std():.3f}" if len(ok) else "-").rjust(16))
        print(f"{name:32s} " + " ".join(cells))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/stamp_bench")
    ap.add_argument("--reuse", action="store_true", help="reuse data and encoders already in --out")
    ap.add_argument("--train-subjects", type=int, default=24)
    ap.add_argument("--test-subjects", type=int, default=16)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--pretrain-iters", type=int, default=25)
    ap.add_argument("--pretrain-batch", type=int, default=8)
    ap.add_argument("--pretrain-seeds", type=int, default=1, help="pretraining repeats (seeds 12345, 12346, ...)")
    ap.add_argument("--probe-epochs", type=int, default=4)
    ap.add_argument("--probe-iters", type=int, default=125)
    ap.add_argument("--probe-batch", type=int, default=32)
    ap.add_argument("--probe-seeds", type=int, default=2, help="probe repeats per pretrained encoder")
    ap.add_argument("--control-seeds", type=int, default=1, help="probe repeats for the positive control")
    ap.add_argument("--horizon", type=float, default=730.0, help="probe horizon (days); demo converter: 730")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared, loaded cores)")
    ap.add_argument("--encoder-tokens", action="store_true",
                    help="diagnostic row: the STAMP encoder probed on its own tokens (no prior path)")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the positive control (target visible in one scan: score below the median)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    os.environ.setdefault("LONGNET_N_PROC_DA", "0")
    os.environ.setdefault("LONGNET_COMPILE", "0")
    from longnet.demo.recipes import demo_environment

    with demo_environment(out):
        t0 = time.time()
        raw = prepare_data(out, args.train_subjects, args.test_subjects, args.data_seed, args.reuse)
        t_data = time.time() - t0
        pre_seeds = [12345 + i for i in range(args.pretrain_seeds)]
        encoders = {(v, s): pretrain(out, v, s, args) for s in pre_seeds for v in ("stamp", "siamese_mae")}
        t_pre = time.time() - t0 - t_data

        def sources(seed: int) -> dict[str, list[str]]:
            src = {"STAMP": ["--encoder", str(encoders["stamp", seed])],
                   "Siamese-MAE (deterministic)": ["--encoder", str(encoders["siamese_mae", seed])],
                   "random encoder": ["--random-encoder", "--preset", args.preset]}
            if args.encoder_tokens:
                src["STAMP, encoder tokens (no z)"] = ["--encoder", str(encoders["stamp", seed]), "--encoder-tokens"]
            return src

        results: dict[str, list[dict]] = {}
        for i, ps in enumerate(pre_seeds):
            for j in range(args.probe_seeds):
                for name, src in sources(ps).items():
                    results.setdefault(name, []).append(probe_once(out, raw, src, 1000 + 100 * i + j, args))
        orc = oracle(raw)
        control: dict[str, list[dict]] = {}
        if not args.no_control:
            truth = add_control_target(out, raw)
            for name, src in sources(pre_seeds[0]).items():
                control[name] = [probe_once(out, raw, src, 2000 + j, args, "low_score", truth)
                                 for j in range(args.control_seeds)]
        t_probe = time.time() - t0 - t_data - t_pre

        first = next(iter(results.values()))[0]
        runs = args.pretrain_seeds * args.probe_seeds
        print(f"\nSTAMP probe benchmark on the synthetic demo cohort ({args.train_subjects} training / "
              f"{args.test_subjects} test subjects): preset {args.preset}; pretraining {args.pretrain_epochs}x"
              f"{args.pretrain_iters} steps of {args.pretrain_batch} pairs; probe {args.probe_epochs}x"
              f"{args.probe_iters} steps of {args.probe_batch} scans; mean ± std over {runs} run(s) = "
              f"{args.pretrain_seeds} pretraining seed(s) x {args.probe_seeds} probe seed(s) (random encoder: a new "
              f"initialisation per run)")
        summary = {"converter": _table(
            f"target {TARGET!r} at {args.horizon:g} days; test split {first['n_subjects']} subjects "
            f"({first['pos_subjects']} converters) / {first['n_visits']} visits ({first['pos_visits']} positive)",
            results)}
        print(f"{'oracle: GT volumes + days, logreg':32s} {orc['AUROC_visit']:16.3f} {orc['AUROC_subject']:16.3f}   "
              f"(fit on the training visits: AUROC {orc['AUROC_train_fit']:.3f}; GT ventricle volume alone on test: "
              f"{orc['AUROC_ventricles_test']:.3f})")
        summary["oracle"] = orc
        if control:
            c0 = next(iter(control.values()))[0]
            summary["control_low_score"] = _table(
                f"positive control: 'low_score' (score below the training median, visible in one scan); "
                f"{c0['n_visits']} test visits ({c0['pos_visits']} positive); pretraining seed {pre_seeds[0]}", control)
        logs = {f"{v}_seed{s}": _pretrain_log(p) for (v, s), p in encoders.items()}  # noqa: E741
        print("\npretraining (mean of the last 3 epochs): " + "; ".join(
            f"{v}: " + ", ".join(f"{k[6:]} {x:.4f}" for k, x in sorted(l.items())) for v, l in logs.items()))
        print(f"\ntime: data {t_data:.0f} s, pretraining {t_pre:.0f} s, probes {t_probe:.0f} s, "
              f"total {time.time() - t0:.0f} s")
        (out / "stamp_probe_summary.json").write_text(json.dumps({"args": vars(args), "results": summary,
                                                                  "pretraining": logs}, indent=2, default=str))
        return 0


if __name__ == "__main__":
    sys.exit(main())
