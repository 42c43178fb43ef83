"""The method arms of bench/methods.py: each trains one longitudinal method and its baseline(s) for one seed through
the real commands (`longnet_train --output-name`, so every arm x seed has its own model folder), predicts the test
split (`longnet_predict -m`), scores it (`longnet_evaluate`) and returns comparisons: one metric, the method's value,
the baseline's value and which direction is better.

`requirements(raw)` says, per method, why a dataset cannot be benchmarked (None: it can).
"""
from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longrep_oneshot import _summary_numbers  # noqa: E402  test Dice from longnet_evaluate's summary.json
from stamp_probe import _subject_level  # noqa: E402  AUROC of the mean probability per subject

from longnet.demo.recipes import call_command  # noqa: E402
from longnet.io.visits import read_visits_csv  # noqa: E402

CONFIG = "3d_fullres"
ALIGNED, UNALIGNED = "nnUNetPlansCPU", "nnUNetPlansCPUUnaligned"  # both from -pl nnUNetPlannerCPU
#: Plans per method. TFM and LongRep compare visits voxel by voxel: rigidly aligned visits. STAMP, LEARNER and
#: ClinImCL embed every test visit preprocessed on its own (no alignment at prediction), so they train on unaligned
#: visits too, as in their README benchmarks (ClinImCL trained on aligned visits, seed 0 of the default cohort:
#: MCCD / between 0.74, worse than its random init's 0.61; unaligned: 0.26).
PLANS = {"tfm": ALIGNED, "longrep": ALIGNED, "stamp": UNALIGNED, "learner": UNALIGNED, "clinimcl": UNALIGNED}
STAMP_TARGET = "converter"
LEARNER_SCORE = "score"


@dataclass
class Bench:
    """One benchmark run: the dataset, where outputs go, budgets and training flags. `raw_folder`, `device` and
    `out` are also what the plugins' demo helpers read."""

    dataset_id: int
    dataset_name: str
    raw_folder: Path
    out: Path
    device: str
    budget: dict  # stage -> (epochs, iterations per epoch); a method and its baseline share a stage
    flags: dict  # stage -> its extra training flags (TFM_ARGS, ...), plus "longrep_finetune" and "stamp_encoder"
    labelled_subjects: int
    stamp_horizon: float

    @property
    def results(self) -> Path:
        return Path(os.environ["LONGNET_RESULTS"]) / self.dataset_name


def _compare(method: str, baseline: str, metric: str, better: str, value, base) -> dict:
    return {"method": method, "baseline": baseline, "metric": metric, "better": better,
            "method_value": _float(value), "baseline_value": _float(base)}


def _float(v) -> float:
    return float("nan") if v is None else float(v)


def train(b: Bench, trainer: str, stage: str, name: str, seed: int, *extra: str) -> Path:
    """`longnet_train D 3d_fullres all -tr TRAINER -p PLANS --output-name NAME` with the stage's budget and flags
    (a stage is named after its method: "longrep_pretrain" trains on PLANS["longrep"])."""
    epochs, iters = b.budget[stage]
    plans = PLANS[stage.split("_")[0]]
    call_command("train", "main", [str(b.dataset_id), CONFIG, "all", "-tr", trainer, "-p", plans, "-device", b.device,
                                   "--seed", str(seed), "--epochs", str(epochs), "--iters-per-epoch", str(iters),
                                   "--output-name", name, *b.flags.get(stage, ()), *extra])
    return b.results / name


def predict(b: Bench, model: Path, name: str, *extra: str) -> Path:
    """`longnet_predict -m MODEL -f all` on the test images; returns the prediction folder."""
    dest = b.out / "predictions" / name
    call_command("predict", "main", ["-i", str(b.raw_folder / "imagesTs"), "-o", str(dest), "-m", str(model), "-f",
                                     "all", "-device", b.device, "--disable_progress_bar", *extra])
    return dest


def evaluate(gt: Path, pred: Path, summary: str, *extra: str) -> dict:
    """`longnet_evaluate GT PRED -o PRED/SUMMARY ...`; returns the summary."""
    call_command("evaluate", "main", [str(gt), str(pred), "-o", str(pred / summary), *extra])
    return json.loads((pred / summary).read_text())


def _ckpt(model: Path) -> str:
    return str(model / "fold_all" / "checkpoint_final.pth")


def tfm(b: Bench, seed: int) -> tuple[list[dict], list[str]]:
    """TFM forecast of each test subject's last visit vs the last context image (LCI) and the context mean."""
    model = train(b, "TFMTrainer", "tfm", f"tfm_s{seed}", seed, "--val-iters", "1", "--disable-final-validation")
    pred = predict(b, model, f"tfm_s{seed}", "--patients", str(b.raw_folder / "patientsTs.json"), "--with-lci",
                   "--with-context-mean")
    s = evaluate(pred / "reference", pred, "summary.json", "--task", "forecast")
    side = s["side_by_side"]
    changed = side.get("changed", {})
    rows = []
    for key, label in (("LCI", "LCI"), ("context_mean", "context mean")):
        rows.append(_compare("TFM", label, "NRMSE", "lower", side["overall"]["prediction"]["NRMSE"],
                             side["overall"][key]["NRMSE"]))
        rows.append(_compare("TFM", label, "NRMSE in the changed region", "lower",
                             changed.get("prediction", {}).get("NRMSE"), changed.get(key, {}).get("NRMSE")))
    note = (f"TFM: {len(s['metric_per_case'])} forecast images; changed region {changed.get('definition', 'empty')}"
            f" ({100 * changed.get('fraction', 0.0):.1f}% of voxels)")
    return rows, [note]


def longrep(b: Bench, seed: int) -> tuple[list[dict], list[str]]:
    """LongRep pretraining on all training visits + finetuning on the labels of few subjects vs nnUNetTrainer from
    random init on the same subjects (the same supervised stage budget); the labelled subjects are drawn by `seed`."""
    labels = ["--labelled-subjects", str(b.labelled_subjects), "--labelled-seed", str(seed)]
    val = ["--val-iters", "2", "--disable-final-validation", "--no-validation-mirroring"]
    pre = train(b, "LongRepPretrainer", "longrep_pretrain", f"longrep_pretrain_s{seed}", seed, "--val-iters", "2")
    models = {"LongRep": train(b, "LongRepFinetuner", "longrep_supervised", f"longrep_s{seed}", seed,
                               "--pretrained-weights", _ckpt(pre), *b.flags["longrep_finetune"], *labels, *val),
              "nnUNetTrainer": train(b, "nnUNetTrainer", "longrep_supervised", f"nnunet_s{seed}", seed, *labels, *val)}
    scores = {}
    for arm, model in models.items():
        pred = predict(b, model, f"{model.name}", "--disable_tta")
        evaluate(b.raw_folder / "labelsTs", pred, "summary.json", "-d", str(b.dataset_id), "--patients",
                 str(b.raw_folder / "patientsTs.json"))
        scores[arm] = _summary_numbers(pred / "summary.json")
    names = {str(v): k for k, v in json.loads((b.raw_folder / "dataset.json").read_text())["labels"].items()}
    per_label = "; ".join(f"{arm} " + ", ".join(f"{names.get(k, k)} {v:.3f}" for k, v in s["dice_per_label"].items())
                          for arm, s in scores.items())
    return ([_compare("LongRep", "nnUNetTrainer (random init)", "mean foreground Dice", "higher",
                      scores["LongRep"]["dice"], scores["nnUNetTrainer"]["dice"])],
            [f"LongRep seed {seed}: Dice per label: {per_label}"])


def stamp(b: Bench, seed: int) -> tuple[list[dict], list[str]]:
    """STAMP pretraining + probe of `converter` vs the same probe on a random encoder: test AUROC per subject (mean
    probability over the subject's visits) and per visit."""
    encoder = train(b, "STAMPTrainer", "stamp_pretrain", f"stamp_s{seed}", seed)
    truth = {case: int(v[STAMP_TARGET]) for case, v in read_visits_csv(b.raw_folder / "visitsTs.csv").items()
             if v.get(STAMP_TARGET) is not None}
    auroc, notes = {}, []
    for arm, source in (("STAMP", ["--encoder", _ckpt(encoder)]),
                        ("random encoder", ["--random-encoder", *b.flags["stamp_encoder"]])):
        tag = "stamp" if arm == "STAMP" else "random"
        model = train(b, "STAMPProbeTrainer", "stamp_probe", f"stamp_probe_{tag}_s{seed}", seed, "--target",
                      STAMP_TARGET, "--horizon-days", f"{b.stamp_horizon:g}", *source)
        pred = predict(b, model, model.name, "--patients", str(b.raw_folder / "patientsTs.json"))
        rows = [r for r in csv.DictReader(open(pred / "predictions.csv")) if r["case"] in truth]
        y = np.array([truth[r["case"]] for r in rows])
        p = np.array([float(r["probability"]) for r in rows])
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(r["subject"], []).append(i)
        auroc[arm] = {**_subject_level(y, p, list(groups.values())), "AUROC_visit": _visit_auroc(y, p)}
    a = auroc["STAMP"]
    if len(set(truth.values())) < 2:
        notes.append(f"STAMP: the test split holds one {STAMP_TARGET} class only: AUROC is undefined (nan)")
    else:
        notes.append(f"STAMP: test split {a['n_subjects']} subjects ({a['pos_subjects']} with {STAMP_TARGET} = 1), "
                     f"{a['n_visits']} visits")
    return [_compare("STAMP", "random encoder", f"AUROC {STAMP_TARGET} per subject", "higher",
                     a["AUROC_subject"], auroc["random encoder"]["AUROC_subject"]),
            _compare("STAMP", "random encoder", f"AUROC {STAMP_TARGET} per visit", "higher", a["AUROC_visit"],
                     auroc["random encoder"]["AUROC_visit"])], notes


def _visit_auroc(y: np.ndarray, p: np.ndarray) -> float:
    from longnet.evaluation.classification import classification_metrics

    return float(classification_metrics(y, p)["AUROC"]) if len(set(y.tolist())) == 2 else float("nan")


def learner(b: Bench, seed: int) -> tuple[list[dict], list[str]]:
    """LEARNER weighted-contrastive pretraining vs MSE-only (`--contrastive-weight 0`), each followed by the frozen-
    encoder change classifier (longnet_learner.demo.run_variant: its encoder sizes and δ): change macro-F1 and
    Spearman ρ. Both stages train for the "learner" budget."""
    from longnet_learner.demo import DELTA, run_variant

    epochs, iters = b.budget["learner"]
    res = {arm: run_variant(b, f"{tag}_s{seed}", weight, seed=seed, epochs=epochs, iters=iters,
                            extra=("--score", LEARNER_SCORE), plans=PLANS["learner"])
           for arm, tag, weight in (("LEARNER", "contrastive", 1.0), ("MSE-only", "mse_only", 0.0))}
    r = res["LEARNER"]
    note = f"LEARNER: {r['num_pairs']} test pairs, classes present {'/'.join(r['present_classes'])} (δ={DELTA:g})"
    return [_compare("LEARNER", "MSE-only", "change macro-F1 over the classes present", "higher", r["macro_F1"],
                     res["MSE-only"]["macro_F1"]),
            _compare("LEARNER", "MSE-only", "Spearman ρ(distance, |Δscore|)", "higher", r["spearman"],
                     res["MSE-only"]["spearman"])], [note]


def clinimcl(b: Bench, seed: int) -> tuple[list[dict], list[str]]:
    """ClinImCL trained vs the same encoder at its seeded random init (`--random-init`): MCCD / between-subject
    distance of the test embeddings (longnet_clinimcl.demo's sizes and scoring)."""
    from longnet_clinimcl.demo import ARGS, _predict_and_evaluate

    trained = train(b, "ClinImCLTrainer", "clinimcl", f"clinimcl_s{seed}", seed, *ARGS)
    random = train(b, "ClinImCLTrainer", "clinimcl", f"clinimcl_random_s{seed}", seed, *ARGS, "--random-init")
    r = {arm: _predict_and_evaluate(b, model, b.out / "predictions" / model.name)
         for arm, model in (("trained", trained), ("random", random))}
    return [_compare("ClinImCL", "random init", "MCCD / between-subject distance", "lower", r["trained"]["ratio"],
                     r["random"]["ratio"])], []


ARMS = {"tfm": tfm, "longrep": longrep, "stamp": stamp, "learner": learner, "clinimcl": clinimcl}


def _visits(path: Path) -> tuple[set[str], dict[str, dict]]:
    """(columns, {case: values}) of a visits CSV (longnet's reader); nothing when the file is absent."""
    rows = read_visits_csv(path) if path.is_file() else {}
    return set().union(*rows.values()), rows


def requirements(raw: Path) -> dict[str, str | None]:
    """Per method: why this raw dataset cannot be benchmarked (a one-line reason), or None."""
    def subjects(side: str) -> dict:
        f = raw / f"patients{side}.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    tr, ts = subjects("Tr"), subjects("Ts")
    common = None
    if sum(len(v) >= 2 for v in tr.values()) < 2:
        common = "needs patientsTr.json with >= 2 subjects of >= 2 visits"
    elif not (raw / "imagesTs").is_dir() or not ts:
        common = "needs a test side: imagesTs/ and patientsTs.json"
    cols_tr, rows_tr = _visits(raw / "visitsTr.csv")
    cols_ts, _ = _visits(raw / "visitsTs.csv")
    labelled = lambda side: (raw / f"labels{side}").is_dir() and any((raw / f"labels{side}").iterdir())  # noqa: E731
    reasons = {
        "tfm": None if any(len(v) >= 2 for v in ts.values()) else "needs test subjects with >= 2 visits",
        "longrep": None if labelled("Tr") and labelled("Ts") else "needs labels in labelsTr/ and labelsTs/",
        "stamp": (f"needs a '{STAMP_TARGET}' column and 'days' in visitsTr.csv and visitsTs.csv"
                  if not {"days", STAMP_TARGET} <= cols_tr or STAMP_TARGET not in cols_ts else
                  f"needs both {STAMP_TARGET} classes among the training visits"
                  if len({v[STAMP_TARGET] for v in rows_tr.values() if v[STAMP_TARGET] is not None}) < 2 else None),
        "learner": None if LEARNER_SCORE in cols_tr and LEARNER_SCORE in cols_ts else
        f"needs a '{LEARNER_SCORE}' column in visitsTr.csv and visitsTs.csv",
        "clinimcl": None,
    }
    return {m: common or r for m, r in reasons.items()}
