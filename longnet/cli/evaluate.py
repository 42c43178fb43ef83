"""`longnet_evaluate GT_DIR PRED_DIR`: metrics → summary.json (segmentation, forecast, classification, embedding)."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from longnet.cli.common import HelpFormatter, cli_main
from longnet.errors import LongnetError
from longnet.utils.files import load_json, save_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="longnet_evaluate", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Compare predictions with references and write summary.json. segmentation (default): Dice, "
                    "IoU, HD95 per label in nnU-Net's schema, plus ASPC between consecutive visits with "
                    "--patients. forecast: NRMSE/PSNR/SSIM of predicted vs true images (with the baselines found in "
                    "PRED_DIR/lci and PRED_DIR/context_mean side by side). classification: "
                    "accuracy, macro-F1, AUROC, PR-AUC, balanced accuracy from CSVs (--delta: improve/stable/worsen "
                    "of visit pairs from a score change). embedding: mean consecutive cosine distance of "
                    "embeddings.npz vs the mean distance between subjects (+ Spearman with |score change|).")
    p.add_argument("gt", help="reference folder (classification: targets CSV, or a folder with visitsTr.csv)")
    p.add_argument("pred", help="prediction folder (classification: CSV; embedding: embeddings.npz or its folder)")
    p.add_argument("-d", dest="dataset", default=None, help="dataset id: labels from its dataset.json (default: "
                   "-djfile, else the dataset.json in PRED_DIR or next to GT_DIR)")
    p.add_argument("-djfile", default=None, help="dataset.json to take labels and file ending from (default: see -d)")
    p.add_argument("-pfile", default=None, help="accepted for nnU-Net compatibility and ignored (default: none)")
    p.add_argument("--patients", default=None, help="{subject: [cases in time order]} json (segmentation: ASPC, "
                   "and STCS for visit pairs on one grid; embedding: MCCD; default: none)")
    p.add_argument("-o", dest="output", default=None, help="summary file (default PRED_DIR/summary.json)")
    p.add_argument("--task", default="segmentation", choices=_task_choices(),
                   help="what the predictions are: label maps, forecast images, class probabilities (CSV), "
                        "embeddings (see the description above), or a task an installed plugin registers")
    p.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--chill", action="store_true", help="evaluate only references that have a prediction")
    p.add_argument("--no_hd95", action="store_true", help="skip HD95 (the slowest metric)")
    p.add_argument("--lesion-label", dest="lesion_label", type=int, default=None,
                   help="segmentation with --patients: label of the lesion metrics (volume error, NSD, ASSD, "
                        "HD95, lesion-wise and new-lesion detection; default: the label named like 'lesion' in "
                        "dataset.json, else all foreground)")
    p.add_argument("--nsd-tolerance", dest="nsd_tolerance", type=float, default=1.0,
                   help="segmentation with --patients: normalised surface Dice tolerance in mm (default 1)")
    p.add_argument("--target", default=None, help="classification: target column (default target/label/converter)")
    p.add_argument("--threshold", type=float, default=None,
                   help="classification: decision threshold (binary; default: the prediction CSV's "
                        "predicted_class column when present, else 0.5)")
    p.add_argument("--baseline", default=None,
                   help="forecast: folder of baseline images to report side by side (default: PRED_DIR/lci "
                        "when present, as written by longnet_predict --with-lci)")
    p.add_argument("--baseline-name", dest="baseline_name", default="LCI", help="forecast: baseline's name")
    p.add_argument("--change-mask", dest="change_mask", default=None,
                   help="forecast: folder of CASE masks of the region that changed (e.g. label change); default: "
                        "|reference − baseline| > --change-threshold")
    p.add_argument("--change-threshold", dest="change_threshold", type=float, default=0.1,
                   help="forecast: intensity change (fraction of the reference's range) that counts as changed "
                        "(default 0.1)")
    p.add_argument("--delta", type=float, default=None,
                   help="classification: score change beyond which a visit pair counts as improved/worsened; "
                        "targets (improve/stable/worsen) come from the reference visits CSV's --score column and "
                        "the predictions' case_from/case pairs (LEARNER change_predictions.csv; default: none, "
                        "binary targets from --target)")
    p.add_argument("--score", default=None, help="classification with --delta, embedding: score column of the "
                   "reference visits CSV (default 'score'); embedding: adds the Spearman correlation of "
                   "consecutive-visit distance with |score change|")
    p.add_argument("--lower-is-healthier", dest="lower_is_healthier", action="store_true",
                   help="classification with --delta: a falling score is an improvement")
    return p


def _task_choices() -> list[str]:
    from longnet.tasks import BUILTIN_TASKS, plugin_task_names

    return [n for n in BUILTIN_TASKS if BUILTIN_TASKS[n].evaluate is not None] + plugin_task_names()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Two passes: a plugin's task adds its own options (and `--task X -h` lists them)."""
    from longnet.tasks import BUILTIN_TASKS, get_task

    parser = build_parser()
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--task", default="segmentation")
    known, _ = first.parse_known_args(argv)
    if known.task not in BUILTIN_TASKS and known.task in _task_choices():
        task = get_task(known.task)
        if task.add_arguments is not None:
            try:
                task.add_arguments(parser.add_argument_group(f"options of task {task.name}"))
            except argparse.ArgumentError as e:
                raise LongnetError(f"task {task.name} declares an option that clashes with longnet_evaluate's own "
                                   f"({e}); rename it in the task's add_arguments") from None
    return parser.parse_args(argv)


def _find_dataset_json(args: argparse.Namespace) -> dict | None:
    if args.djfile:
        return load_json(args.djfile)
    if args.dataset:
        from longnet.paths import dataset_name_from_id, preprocessed_root, raw_root

        name = dataset_name_from_id(args.dataset)
        for getter in (raw_root, preprocessed_root):
            try:
                path = getter() / name / "dataset.json"
            except LongnetError:
                continue
            if path.is_file():
                return load_json(path)
        raise LongnetError(f"dataset.json of {name} not found under $LONGNET_RAW or $LONGNET_PREPROCESSED")
    for candidate in (Path(args.pred) / "dataset.json", Path(args.gt).parent / "dataset.json"):
        if candidate.is_file():
            return load_json(candidate)
    return None


def _load_subjects(path: str | None) -> dict[str, list[str]] | None:
    if not path:
        return None
    subjects = load_json(path)
    if not isinstance(subjects, dict) or not all(isinstance(v, list) for v in subjects.values()):
        raise LongnetError("patients file must map subject -> [case, case, ...]", path)
    return {str(k): [str(c) for c in v] for k, v in subjects.items()}


def evaluate_segmentation(args: argparse.Namespace) -> dict:
    from longnet.dataset.labels import LabelManager
    from longnet.evaluation.longitudinal import longitudinal_consistency, stcs_from_folders, volumes_from_summary
    from longnet.evaluation.segmentation import evaluate_folders

    dj = _find_dataset_json(args)
    if dj is None:
        raise LongnetError("labels unknown: give -d ID or -djfile dataset.json (or keep dataset.json in PRED_DIR)")
    lm = LabelManager.from_dataset_json(dj)
    targets = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    ending = dj.get("file_ending", ".nii.gz")
    summary = evaluate_folders(args.gt, args.pred, targets, ending, lm.ignore_label, args.num_processes,
                               not args.no_hd95, args.chill, allowed_values=lm.valid_values)
    subjects = _load_subjects(args.patients)
    if subjects is not None:
        vp, vr = volumes_from_summary(summary["metric_per_case"], ending)
        summary["longitudinal"] = longitudinal_consistency(vp, vr, subjects)
        # STCS needs both visits on one grid: only pairs predicted on an aligned (common) grid count
        summary["longitudinal"]["STCS"] = stcs_from_folders(args.pred, subjects, targets, ending, args.gt)
        from longnet.evaluation.lesions import lesion_summary, resolve_lesion_target

        name, values = resolve_lesion_target(dj, args.lesion_label)
        summary["lesions"] = lesion_summary(args.gt, args.pred, subjects, values, ending, name, args.nsd_tolerance)
    return summary


def _image_pairs(gt_dir: Path, pred_dir: Path, ending: str | None) -> list[tuple[str, Path, Path]]:
    from longnet.dataset.io import file_ending_of
    from longnet.dataset.raw import validate_case_id

    pairs = []
    for p in sorted(pred_dir.iterdir()):
        e = file_ending_of(p)
        if p.name.startswith(".") or (ending and e != ending) or e not in (".nii.gz", ".nii", ".mha", ".nrrd"):
            continue
        case = validate_case_id(p.name[: -len(e)], p)
        for cand in (gt_dir / p.name, gt_dir / f"{case}_0000{e}"):
            if cand.is_file():
                pairs.append((case, cand, p))
                break
    if not pairs:
        raise LongnetError("no predicted image has a same-named reference (CASE{ending} or CASE_0000{ending})",
                           pred_dir)
    return pairs


def evaluate_forecast(args: argparse.Namespace) -> dict:
    """NRMSE/PSNR/SSIM of predicted vs reference images ([0, 1] by the reference's range); with a baseline
    folder (LCI) also the baseline's metrics side by side, overall and inside the region that changed."""
    from longnet.dataset.io import read_image_files
    from longnet.evaluation.image import forecast_comparison

    dj = _find_dataset_json(args) if (args.djfile or args.dataset) else None
    pred_dir = Path(args.pred)
    pairs = _image_pairs(Path(args.gt), pred_dir, dj.get("file_ending") if dj else None)
    baseline_dir = Path(args.baseline) if args.baseline else (pred_dir / "lci" if (pred_dir / "lci").is_dir() else None)
    if baseline_dir is not None and not baseline_dir.is_dir():
        raise LongnetError("baseline folder not found", baseline_dir)
    mask_dir = Path(args.change_mask) if args.change_mask else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise LongnetError("change-mask folder not found", mask_dir)
    # further baselines scored on the same cases and changed region (TFM's --with-context-mean writes context_mean/)
    others = {name: pred_dir / folder for name, folder in (("context_mean", "context_mean"),)
              if (pred_dir / folder).is_dir()}
    per_case = []
    names = ("NRMSE", "PSNR", "SSIM")
    for case, ref_file, pred_file in pairs:
        ref, _ = read_image_files([ref_file])
        pred, _ = read_image_files([pred_file])
        if ref.shape != pred.shape:
            raise LongnetError(f"predicted image shape {pred.shape[1:]} differs from the reference {ref.shape[1:]}",
                               pred_file)
        base = _same_named(baseline_dir, pred_file.name, ref.shape, "baseline")
        mask = _same_named(mask_dir, pred_file.name, ref.shape, "change mask")
        m = forecast_comparison(pred[0], ref[0], None if base is None else base[0],
                                None if mask is None else mask[0] > 0, args.change_threshold)
        row = {"case": case, "prediction_file": str(pred_file), "reference_file": str(ref_file),
               "metrics": {k: m[k] for k in ("NRMSE", "PSNR", "SSIM")}}
        if base is not None:
            row["baseline"] = {k[len("baseline_"):]: v for k, v in m.items()
                               if k.startswith("baseline_") and not k.endswith("_changed")}
        if "changed_fraction" in m:
            row["changed"] = {"fraction": m["changed_fraction"],
                              "prediction": {k[:-8]: v for k, v in m.items()
                                             if k.endswith("_changed") and not k.startswith("baseline_")}}
            if base is not None:
                row["changed"]["baseline"] = {k[9:-8]: v for k, v in m.items()
                                              if k.startswith("baseline_") and k.endswith("_changed")}
        for name, folder in others.items():  # scored like the prediction, in the same changed region
            o = forecast_comparison(_same_named(folder, pred_file.name, ref.shape, name)[0], ref[0],
                                    None if base is None else base[0], None if mask is None else mask[0] > 0,
                                    args.change_threshold)
            row[name] = {k: o[k] for k in names}
            if "changed" in row:
                row["changed"][name] = {k: o[f"{k}_changed"] for k in names}
        per_case.append(row)
    mean = _agg(per_case, lambda c: c["metrics"], np.nanmean)
    median = _agg(per_case, lambda c: c["metrics"], np.nanmedian)
    summary = {"task": "forecast", "mean": mean, "median": median}
    if baseline_dir is not None or mask_dir is not None or others:
        name = args.baseline_name
        side = {"overall": {"prediction": mean}}
        if baseline_dir is not None:
            side["overall"][name] = _agg(per_case, lambda c: c["baseline"], np.nanmean)
        for other in others:
            side["overall"][other] = _agg(per_case, lambda c: c[other], np.nanmean)
        changed = [c for c in per_case if "changed" in c]
        if changed:
            side["changed"] = {"prediction": _agg(changed, lambda c: c["changed"]["prediction"], np.nanmean),
                               "fraction": float(np.mean([c["changed"]["fraction"] for c in changed])),
                               "definition": (f"masks in {mask_dir}" if mask_dir is not None else
                                              f"|reference - {name}| > {args.change_threshold} (reference range)")}
            if baseline_dir is not None:
                side["changed"][name] = _agg(changed, lambda c: c["changed"]["baseline"], np.nanmean)
            for other in others:
                side["changed"][other] = _agg(changed, lambda c: c["changed"][other], np.nanmean)
        summary["baseline_name"] = name
        summary["side_by_side"] = side
        print(_forecast_table(side, names))
    summary["metric_per_case"] = per_case
    return summary


def _same_named(folder: Path | None, name: str, shape: tuple, what: str) -> np.ndarray | None:
    from longnet.dataset.io import read_image_files

    if folder is None:
        return None
    path = folder / name
    if not path.is_file():
        raise LongnetError(f"{what} for {name} not found", path)
    arr, _ = read_image_files([path])
    if arr.shape != shape:
        raise LongnetError(f"{what} shape {arr.shape[1:]} differs from the reference {shape[1:]}", path)
    return arr


def _agg(rows: list[dict], get, fn) -> dict[str, float]:
    keys = list(get(rows[0])) if rows else []
    return {k: float(fn([get(r)[k] for r in rows])) for k in keys}


def _forecast_table(side: dict, names: Sequence[str]) -> str:
    lines = [f"{'region':<9}{'method':<12}" + "".join(f"{n:>10}" for n in names)]
    for region, entries in side.items():
        for method, values in entries.items():
            if isinstance(values, dict):
                lines.append(f"{region:<9}{method:<12}" + "".join(f"{values.get(n, float('nan')):>10.4f}"
                                                                 for n in names))
    return "\n".join(lines)


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise LongnetError(f"cannot read CSV ({e.strerror})", path) from None
    if not rows or "case" not in rows[0]:
        raise LongnetError("CSV needs a header with a 'case' column and at least one row", path)
    return rows


def _csv_in(path: Path, names: Sequence[str]) -> Path:
    if path.is_file():
        return path
    for n in names:
        if (path / n).is_file():
            return path / n
    found = sorted(path.glob("*.csv")) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise LongnetError(f"no CSV found (looked for {', '.join(names)})", path)


def evaluate_classification(args: argparse.Namespace) -> dict:
    """Predictions: `case,probability` (binary) or `case,prob_0,prob_1,...`; targets: `case,<target column>`."""
    from longnet.evaluation.classification import classification_metrics

    if args.delta is not None:
        return _evaluate_change(args)
    pred_rows = _read_csv(_csv_in(Path(args.pred), ["predictions.csv"]))
    gt_rows = _read_csv(_csv_in(Path(args.gt), ["targets.csv", "visitsTs.csv", "visitsTr.csv"]))
    col = args.target or next((c for c in ("target", "label", "converter") if c in gt_rows[0]), None)
    if col is None or col not in gt_rows[0]:
        raise LongnetError(f"targets CSV has no column {col or 'target/label/converter'!r}; use --target", args.gt)
    targets = {r["case"]: r[col] for r in gt_rows if r.get(col, "") not in ("", None)}
    prob_cols = sorted((c for c in pred_rows[0] if c.startswith("prob_")), key=lambda c: int(c[5:]))
    if not prob_cols and "probability" not in pred_rows[0]:
        raise LongnetError("prediction CSV needs a 'probability' column or prob_0, prob_1, ... columns", args.pred)
    use_pred = args.threshold is None and "predicted_class" in pred_rows[0]
    cases, y_true, y_prob, y_pred = [], [], [], []
    for r in pred_rows:
        if r["case"] not in targets:
            continue
        cases.append(r["case"])
        y_true.append(int(float(targets[r["case"]])))
        y_prob.append([float(r[c]) for c in prob_cols] if prob_cols else float(r["probability"]))
        if use_pred:
            y_pred.append(int(float(r["predicted_class"])))
    if not cases:
        raise LongnetError("no predicted case has a target", args.pred)
    threshold = 0.5 if args.threshold is None else args.threshold
    metrics = classification_metrics(np.asarray(y_true), np.asarray(y_prob), threshold,
                                     np.asarray(y_pred) if use_pred else None)
    return {"task": "classification", "target": col, "metrics": metrics, "cases": cases,
            "decisions": "predicted_class column" if use_pred else f"probability >= {threshold:g}"}


def _reference_scores(gt: Path, column: str | None, required: bool) -> dict[str, float] | None:
    """{case: score} from a visits CSV (or every visits*.csv / targets.csv of a folder); None if absent."""
    files = [gt] if gt.is_file() else sorted(gt.glob("visits*.csv")) + sorted(gt.glob("targets.csv"))
    scores: dict[str, float] = {}
    name = column or "score"
    for f in files:
        for r in _read_csv(f):
            if r.get(name) not in (None, ""):
                try:
                    scores[r["case"]] = float(r[name])
                except ValueError:
                    raise LongnetError(f"column {name!r} holds a non-number for case {r['case']!r}", f) from None
    if not scores and (required or column):
        raise LongnetError(f"no reference CSV with a {name!r} column", gt)
    return scores or None


def _evaluate_change(args: argparse.Namespace) -> dict:
    from longnet.evaluation.change import evaluate_change_predictions

    pred_file = _csv_in(Path(args.pred), ["change_predictions.csv", "predictions.csv"])
    scores = _reference_scores(Path(args.gt), args.score, required=True)
    try:
        result = evaluate_change_predictions(_read_csv(pred_file), scores, args.delta, not args.lower_is_healthier,
                                             _load_subjects(args.patients))
    except ValueError as e:
        raise LongnetError(str(e), pred_file) from None
    return {"task": "classification", "target": f"change of {args.score or 'score'} (delta {args.delta:g})",
            **result}


def evaluate_embedding(args: argparse.Namespace) -> dict:
    from longnet.evaluation.embedding import embedding_summary, load_embeddings

    pred = Path(args.pred)
    npz = pred if pred.is_file() else pred / "embeddings.npz"
    if not npz.is_file():
        raise LongnetError("embeddings.npz not found", npz)
    patients = args.patients
    if patients is None:
        for n in ("patientsTs.json", "patientsTr.json", "patients.json"):
            if (Path(args.gt) / n).is_file():
                patients = str(Path(args.gt) / n)
                break
    subjects = _load_subjects(patients)
    if subjects is None:
        raise LongnetError("embedding evaluation needs --patients (subject -> cases in time order)")
    try:
        emb = load_embeddings(npz)
    except (OSError, ValueError) as e:
        raise LongnetError(f"cannot read embeddings ({e})", npz) from None
    scores = _reference_scores(Path(args.gt), args.score, required=False) if Path(args.gt).exists() else None
    return {"task": "embedding", **embedding_summary(emb, subjects, scores)}


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)  # before the imports: -h answers at once
    from longnet.evaluation.input_checks import check_folders, check_output
    from longnet.tasks import get_task

    run = get_task(args.task).evaluator()
    pred = Path(args.pred)
    out = Path(args.output) if args.output else (pred if pred.is_dir() else pred.parent) / "summary.json"
    if args.task in ("segmentation", "forecast"):  # folders of reference images, which stay as given
        if Path(args.gt).is_dir() and pred.is_dir():
            check_folders(args.gt, pred)
        check_output(out, args.gt)
    summary = run(args)
    save_json(summary, out, sort_keys=args.task == "segmentation")  # nnU-Net sorts summary.json's keys
    headline = _headline(summary)
    print(f"wrote {out}" + (f" ({headline})" if headline else ""))
    return 0


_HEADLINE_KEYS = ("accuracy", "balanced_accuracy", "macro_F1", "AUROC", "MCCD", "between_subject_distance",
                  "MCCD_over_between", "NRMSE", "SSIM", "MAE_days", "spearman")


def _headline(summary: dict) -> str:
    """The few numbers a user looks for first, whatever the task (all of them are in the file)."""
    parts = []
    fg = summary.get("foreground_mean", {}).get("Dice")
    if fg is not None:
        parts.append(f"mean foreground Dice {fg:.4f}")
    lesions = (summary.get("lesions") or {}).get("overall")
    if lesions:
        parts.append(f"{summary['lesions']['label']} detection F1 {lesions['F1']:.3f}, new-lesion recall "
                     f"{lesions['new_lesion_recall']:.3f} ({lesions['n_new_ref']} new)")
    flat = {**summary, **(summary.get("metrics") or {}), **(summary.get("mean") or {})}
    parts += [f"{k} {flat[k]:.4g}" for k in _HEADLINE_KEYS if isinstance(flat.get(k), (int, float))]
    return "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
