"""Pick the best configuration or pair ensemble from cross-validation, as nnU-Net's find_best_configuration.

Every trained model's folds are merged and scored by the foreground mean Dice; unless disabled, every pair of
models is ensembled (probability average of the fold validations' `.npz`) and scored against
`PRE/<D>/gt_segmentations`. The highest score wins, ties going to the first candidate (single models first,
then ensembles); postprocessing is then determined on the winner. Results go to
`RES/<D>/inference_information.json` and `inference_instructions.txt`; with `patientsTr.json` in the raw
dataset each candidate's longitudinal consistency (ASPC) is reported next to its Dice.
"""
from __future__ import annotations

import math
import shutil
from typing import Sequence

from longnet.errors import LongnetError
from longnet.workflow.crossval import accumulate_cv_results, crossval_folder, folds_name, reference_folder
from longnet.evaluation.inference_instructions import instruction_lines, write_instructions
from longnet.evaluation.nnunet_summary import evaluate_to_summary, foreground_dice, load_summary
from longnet.evaluation.selection_longitudinal import candidate_consistency, consistency_text, load_subjects
from longnet.inference.ensemble import ensemble_crossval, validation_npz_folders
from longnet.paths import preprocessed_root, raw_root, results_root
from longnet.postprocessing.determine import determine_postprocessing
from longnet.utils.files import load_json, save_json
from longnet.utils.parallel import default_num_processes


def identifier(model: dict) -> str:
    return f"{model['trainer']}__{model['plans']}__{model['configuration']}"


def models_to_consider(dataset_name: str, trainers: Sequence[str], configurations: Sequence[str],
                       plans_names: Sequence[str]) -> list[dict]:
    """{trainer, configuration, plans} in nnU-Net's order (trainer, then configuration, then plans).
    Configurations the plans do not define are skipped; a defined but untrained one is an error."""
    models = []
    for trainer in trainers:
        for config in configurations:
            for plans_name in plans_names:
                plans_file = preprocessed_root() / dataset_name / f"{plans_name}.json"
                if not plans_file.is_file():
                    raise LongnetError("plans file not found (run longnet_plan_and_preprocess)", plans_file)
                if config not in (load_json(plans_file).get("configurations") or {}):
                    print(f"{plans_name} has no configuration {config}: skipped")
                    continue
                model = {"configuration": config, "plans": plans_name, "trainer": trainer}
                folder = results_root() / dataset_name / identifier(model)
                if not folder.is_dir():
                    raise LongnetError(f"configuration {config} is planned but not trained: train every requested "
                                       f"fold (longnet_train {dataset_name} {config} FOLD -tr {trainer} -p "
                                       f"{plans_name}) or leave it out of -c", folder)
                models.append(model)
    if not models:
        raise LongnetError("none of the requested configurations is planned", preprocessed_root() / dataset_name)
    return models


def _best(results: dict[str, dict]) -> str:
    scores = [r["result"] for r in results.values() if not math.isnan(r["result"])]
    if not scores:
        return next(iter(results))
    top = max(scores)
    return next(k for k, r in results.items() if r["result"] == top)


def _ensembles(dataset_name: str, models: list[dict], folds, num_processes: int, overwrite: bool) -> dict:
    folders = [results_root() / dataset_name / identifier(m) for m in models]
    gt = reference_folder(dataset_name, prefer_raw=False)
    results = {}
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            name = f"ensemble___{folders[i].name}___{folders[j].name}___{folds_name(folds)}"
            out = results_root() / dataset_name / "ensembles" / name
            if overwrite and out.exists():
                shutil.rmtree(out)
            print(f"ensembling {folders[i].name} + {folders[j].name}")
            ensemble_crossval([folders[i], folders[j]], out, folds, num_processes, overwrite)
            dj, plans = load_json(out / "dataset.json"), load_json(out / "plans.json")
            summary = evaluate_to_summary(gt, out, dj, out / "summary.json", num_processes, chill=True,
                                          reader_writer=plans.get("image_reader_writer"))
            results[name] = {"source": out, "result": foreground_dice(summary), "summary": summary,
                             "members": [models[i], models[j]]}
    return results


def _longitudinal(dataset_name: str, results: dict[str, dict], file_ending: str) -> dict | None:
    try:
        raw = raw_root()
    except LongnetError:  # no raw folder configured: no subject table to read
        return None
    subjects = load_subjects(raw / dataset_name / "patientsTr.json")
    if subjects is None:
        return None
    cache: dict[str, float] = {}
    return {k: candidate_consistency(r["summary"], subjects, file_ending, cache) for k, r in results.items()}


def find_best_configuration(dataset_name: str, models: list[dict], allow_ensembling: bool = True,
                            num_processes: int = 1, overwrite: bool = True,
                            folds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict:
    """Run the selection and write `inference_information.json` / `inference_instructions.txt`; returns the
    information dict."""
    folds = list(folds)
    ensembling = allow_ensembling and len(models) > 1
    if ensembling:  # before any work: missing probabilities are the common mistake
        for m in models:
            validation_npz_folders(results_root() / dataset_name / identifier(m), folds)
    results: dict[str, dict] = {}
    for m in models:
        folder = results_root() / dataset_name / identifier(m)
        print(f"accumulating the cross-validation of {folder.name}")
        summary = accumulate_cv_results(folder, crossval_folder(folder, folds), folds, num_processes, overwrite,
                                        dataset_name)
        results[identifier(m)] = {"source": crossval_folder(folder, folds), "result": foreground_dice(summary),
                                  "summary": summary, "members": [m]}
    if ensembling:
        results.update(_ensembles(dataset_name, models, folds, num_processes, overwrite))
    best_key = _best(results)
    best = results[best_key]
    file_ending = load_json(best["source"] / "dataset.json").get("file_ending", ".nii.gz")
    longitudinal = _longitudinal(dataset_name, results, file_ending)
    print("\n***All results:***")
    for k, r in results.items():
        extra = f"  | {consistency_text(longitudinal[k])}" if longitudinal else ""
        print(f"{k}: {r['result']}{extra}")
    print(f"\n*Best*: {best_key}: {best['result']}\n")
    print("***Determining postprocessing for best model/ensemble***")
    determine_postprocessing(best["source"], reference_folder(dataset_name, prefer_raw=False),
                             best["source"] / "plans.json", best["source"] / "dataset.json", num_processes,
                             keep_postprocessed=True)
    post = load_summary(best["source"] / "postprocessed" / "summary.json")
    info = {
        "all_results": {k: r["result"] for k, r in results.items()},
        "best_model_or_ensemble": {
            "postprocessing_file": str((best["source"] / "postprocessing.pkl").absolute()),
            "result_on_crossval_post_pp": foreground_dice(post),
            "result_on_crossval_pre_pp": best["result"],
            "selected_model_or_models": [{"configuration": m["configuration"], "plans_identifier": m["plans"],
                                          "trainer": m["trainer"]} for m in best["members"]],
            "some_plans_file": str((best["source"] / "plans.json").absolute()),
        },
        "considered_models": models,
        "dataset_name_or_id": dataset_name,
        "ensembling_allowed": allow_ensembling,
        "folds": folds,
    }
    if longitudinal is not None:
        info["longitudinal"] = longitudinal
    dest = results_root() / dataset_name
    save_json(info, dest / "inference_information.json", sort_keys=True)
    lines = instruction_lines(info, default_num_processes())  # nnU-Net prints its default, not -np
    write_instructions(lines, dest / "inference_instructions.txt")
    print()
    print("\n".join(lines))
    return info
