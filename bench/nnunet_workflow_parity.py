"""The nnU-Net workflow with longnet and nnU-Net 2.8.1 on the same Task04 data, crossed in both directions.

nnU-Net lives in its own virtual environment (never a longnet dependency), e.g.
    python3 -m venv --system-site-packages /work/nnunet_venv && /work/nnunet_venv/bin/pip install nnunetv2==2.8.1

One command, three parts (every training is tiny: 1 epoch of 2 iterations, 1 validation iteration, CPU):

* `2d`: a 20-case subset planned with `longnet_plan_and_preprocess -d 4` (default configurations, so 2d and
  3d_fullres), a user `splits_final.json` with 2 folds, 2d and 3d_fullres trained by longnet on both folds with
  `--npz`. The 2d model folder (folds 0 1) predicts six held-out cases with nnU-Net's
  `nnUNetv2_predict_from_modelfolder` and with `longnet_predict -m`: voxel agreement.
* `select` (same models): `longnet_find_best_configuration 4 -c 2d 3d_fullres -f 0 1` on longnet's results and
  `nnUNetv2_find_best_configuration` on a copy of them (nnU-Net reads our validation `.npz` + `.pkl`); chosen
  model, scores, postprocessing decisions, merged/ensembled/postprocessed label maps compared. Then
  `longnet_ensemble` vs `nnUNetv2_ensemble` on copies of the validation folders (2d + 3d_fullres, per fold,
  `--save_npz`; the model's plans.json/dataset.json added, which nnU-Net's ensembler reads from its first input),
  and `longnet_apply_postprocessing` vs `nnUNetv2_apply_postprocessing` on the winner's cross-validation folder
  (each tool with its own decision file, and longnet with nnU-Net's decision).
* `cascade`: a 12-case subset planned by both tools with `-gpu_memory_target 0.02` (small patches, so
  3d_lowres and 3d_cascade_fullres are planned; the two plans are compared), trained without mirroring
  (`nnUNetTrainerNoMirroring`: 8x cheaper 3D validation and prediction, no TTA at prediction either).
  (a) longnet trains 3d_lowres on both folds and 3d_cascade_fullres on fold 0, predicts 3d_lowres then the
  cascade with `-prev_stage_predictions`; nnU-Net predicts with longnet's model folders, the cascade from the
  same lowres predictions. (b) nnU-Net preprocesses and trains the same cascade itself (trainer
  `nnUNetTrainerNoMirroring_tiny`, its no-mirroring trainer with the tiny budget, found through
  `nnUNet_extTrainer`); `longnet_predict -m` on nnU-Net's model folders vs nnU-Net's predictor, the cascade from
  nnU-Net's lowres predictions.

Everything lands in `--work` (wiped first unless `--reuse`); `report.json` holds every number and the table
printed at the end. Wall time of each step and of the whole run is recorded.

    OMP_NUM_THREADS=1 python bench/nnunet_workflow_parity.py            # ~15 min on a busy 2-core machine
    python bench/nnunet_workflow_parity.py --parts cascade --reuse      # one part, finished trainings kept
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nnunet_interop import (PREDICT_CASES, TASK04, agreement, environment, longnet, nnunet,  # noqa: E402
                            prepare_inputs, run)

DATASET = "Dataset004_Hippocampus"
SELECT_CASES = 20
CASCADE_CASES = 12
CASCADE_GPU_TARGET = "0.02"  # GB: patches small enough that both planners add 3d_lowres on Task04's 1 mm grid
BUDGET = ("--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1")
# The cascade trains without mirroring (longnet's and nnU-Net's nnUNetTrainerNoMirroring): mirroring TTA would
# make every 3D final validation and prediction 8x dearer, and both tools then predict these models without it.
LN_CASCADE_TRAINER = "nnUNetTrainerNoMirroring"
NN_TRAINER = "nnUNetTrainerNoMirroring_tiny"
_NN_TINY_TRAINER = '''import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import \\
    nnUNetTrainerNoMirroring


class {name}(nnUNetTrainerNoMirroring):
    """nnU-Net's no-mirroring trainer with the bench's tiny budget (1 epoch x 2 iterations, 1 validation iteration)."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
'''


class Bench:
    """Step runner: every command's wall time goes into `seconds` under its step name."""

    def __init__(self, work: Path, venv: Path, device: str, reuse: bool):
        self.work, self.venv, self.device, self.reuse = work, venv, device, reuse
        self.log = work / "commands.log"
        self.seconds: dict[str, float] = {}

    def step(self, name: str, cmd: list[str], env: dict) -> float:
        t = run(cmd, env, self.log)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + t, 2)
        print(f"  {name}: {t:.1f} s", flush=True)
        return t

    def try_step(self, name: str, cmd: list[str], env: dict) -> dict:
        """A command that may fail by design: exit status and the last line of its output."""
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(self.log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n{proc.stdout}")
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        return {"exit_status": proc.returncode, "last_line": lines[-1] if lines else ""}

    def ln(self, module: str, func: str, *args: str) -> list[str]:
        return longnet(module, func, *args)

    def nn(self, command: str, *args: str) -> list[str]:
        return nnunet(self.venv, command, *args)

    def trained(self, results: Path, tpc: str, fold: str) -> bool:
        return self.reuse and (results / DATASET / tpc / f"fold_{fold}" / "checkpoint_final.pth").is_file()


# ---------------------------------------------------------------------------------------------------- data

def labelled_cases() -> list[str]:
    """Task04 case numbers with a label, the six prediction cases left out (they are predicted, never trained)."""
    ids = [p.name[len("hippocampus_"):-len(".nii.gz")] for p in sorted((TASK04 / "labelsTr").glob("hippocampus_*.nii.gz"))]
    return [i for i in ids if i not in PREDICT_CASES]


def make_raw(b: Bench, root: Path, cases: list[str], env: dict) -> None:
    """MSD-layout copy of `cases`, converted by longnet into `root/raw` (read by both tools)."""
    if b.reuse and (root / "raw" / DATASET / "dataset.json").is_file():
        return
    task = root / "msd" / "Task04_Hippocampus"
    shutil.rmtree(task, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
        for c in cases:
            shutil.copyfile(TASK04 / sub / f"hippocampus_{c}.nii.gz", task / sub / f"hippocampus_{c}.nii.gz")
    shutil.copyfile(TASK04 / "dataset.json", task / "dataset.json")
    shutil.rmtree(root / "raw" / DATASET, ignore_errors=True)
    b.step("convert", b.ln("convert", "main", "-i", str(task), "-overwrite_id", "4", "-np", "1"), env)


def two_fold_splits(cases: list[str], *pre_roots: Path) -> list[dict]:
    """A user splits_final.json (2 folds: alternate cases) written into every preprocessed dataset folder."""
    ids = [f"hippocampus_{c}" for c in sorted(cases)]
    splits = [{"train": sorted(ids[1::2]), "val": sorted(ids[0::2])},
              {"train": sorted(ids[0::2]), "val": sorted(ids[1::2])}]
    for pre in pre_roots:
        (pre / DATASET / "splits_final.json").write_text(json.dumps(splits, indent=4))
    return splits


def load(path: Path):
    return json.loads(path.read_text())


def agreement_sum(parts: list[dict]) -> dict:
    """Several `agreement` results (disjoint case sets) as one."""
    voxels = sum(p["voxels"] for p in parts)
    diff = sum(p["differing_voxels"] for p in parts)
    cases = {k: v for p in parts for k, v in p["cases"].items()}
    return {"overall_agreement": (voxels - diff) / voxels, "voxels": voxels, "differing_voxels": diff, "cases": cases}


def brief(a: dict) -> dict:
    """An agreement without its per-case Dice (kept in the full report)."""
    return {"overall_agreement": a["overall_agreement"], "voxels": a["voxels"], "differing_voxels": a["differing_voxels"],
            "cases": len(a["cases"]), "min_case_agreement": min(v["agreement"] for v in a["cases"].values())}


def npz_difference(a_dir: Path, b_dir: Path) -> dict:
    """Largest absolute difference between the `probabilities` arrays of same-named `.npz` files."""
    worst, n = 0.0, 0
    for pa in sorted(a_dir.glob("*.npz")):
        with np.load(pa, allow_pickle=False) as fa, np.load(b_dir / pa.name, allow_pickle=False) as fb:
            x, y = fa["probabilities"], fb["probabilities"]
            if x.shape != y.shape:
                raise SystemExit(f"{pa.name}: probability shapes differ {x.shape} vs {y.shape}")
            worst = max(worst, float(np.abs(x.astype(np.float64) - y).max()))
            n += 1
    return {"files": n, "max_abs_difference": worst}


# ---------------------------------------------------------------------------------------------------- parts

def prepare_select(b: Bench, inputs: Path) -> dict:
    """20 cases, default planning (2d + 3d_fullres), 2 folds, both configurations trained by longnet with --npz."""
    root = b.work / "select"
    env = environment(root / "raw", root / "pre", root / "results")
    cases = labelled_cases()[:SELECT_CASES]
    make_raw(b, root, cases, env)
    plans_file = root / "pre" / DATASET / "nnUNetPlans.json"
    if not (b.reuse and plans_file.is_file()):
        b.step("select: longnet_plan_and_preprocess (default configurations)",
               b.ln("plan_and_preprocess", "main_plan_and_preprocess", "-d", "4", "-np", "1", "-npfp", "1"), env)
    planned = list(load(plans_file)["configurations"])
    if "2d" not in planned:
        raise SystemExit(f"default planning gave {planned}: no 2d configuration")
    splits = two_fold_splits(cases, root / "pre")
    for conf in ("2d", "3d_fullres"):
        for fold in ("0", "1"):
            if not b.trained(root / "results", f"nnUNetTrainer__nnUNetPlans__{conf}", fold):
                b.step(f"select: longnet_train {conf} fold {fold} --npz",
                       b.ln("train", "main", "4", conf, fold, *BUDGET, "--npz", "-device", b.device), env)
    return {"root": root, "env": env, "planned": planned,
            "splits": [{"train": len(s["train"]), "val": len(s["val"])} for s in splits]}


def part_2d(b: Bench, sel: dict, inputs: Path) -> dict:
    """The longnet 2d model folder (folds 0 1) predicted by nnU-Net and by longnet_predict -m."""
    out = b.work / "2d"
    shutil.rmtree(out, ignore_errors=True)
    model = sel["root"] / "results" / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    env = sel["env"]
    b.step("2d: nnUNetv2_predict_from_modelfolder", b.nn(
        "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "pred_nnunet"), "-m", str(model),
        "-f", "0", "1", "-device", b.device, "-npp", "1", "-nps", "1", "--disable_progress_bar"), env)
    b.step("2d: longnet_predict -m", b.ln(
        "predict", "main", "-i", str(inputs), "-o", str(out / "pred_longnet"), "-m", str(model), "-f", "0", "1",
        "-device", b.device), env)
    plans = load(model / "plans.json")["configurations"]["2d"]
    return {"model": str(model), "folds": [0, 1], "patch_size": plans["patch_size"], "batch_size": plans["batch_size"],
            "nnunet_vs_longnet": agreement(out / "pred_nnunet", out / "pred_longnet")}


def _pp_decision(folder: Path) -> dict:
    """A postprocessing.json (either tool writes one) reduced to its decision and scores."""
    d = load(folder / "postprocessing.json")
    return {"postprocessing_fns": d["postprocessing_fns"], "postprocessing_kwargs": d["postprocessing_kwargs"],
            "fg_dice_before": d["input_folder"]["foreground_mean"]["Dice"],
            "fg_dice_after": d["postprocessed"]["foreground_mean"]["Dice"]}


def part_select(b: Bench, sel: dict) -> dict:
    """find_best (both tools, same validation outputs), ensemble and apply_postprocessing crossed."""
    root, out = sel["root"], b.work / "select_compare"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ln_res = root / "results"
    nn_res = out / "nnunet_results"  # nnU-Net works on a copy: both tools write the same file names under RES/<D>
    for conf in ("2d", "3d_fullres"):
        tpc = f"nnUNetTrainer__nnUNetPlans__{conf}"
        shutil.rmtree(ln_res / DATASET / tpc / "crossval_results_folds_0_1", ignore_errors=True)
        shutil.copytree(ln_res / DATASET / tpc, nn_res / DATASET / tpc, ignore=shutil.ignore_patterns("*.pth"))
    shutil.rmtree(ln_res / DATASET / "ensembles", ignore_errors=True)
    env_ln = sel["env"]
    env_nn = environment(root / "raw", root / "pre", nn_res)
    b.step("select: longnet_find_best_configuration", b.ln(
        "model_selection", "main_find_best", "4", "-c", "2d", "3d_fullres", "-f", "0", "1", "-np", "1"), env_ln)
    nn_log = out / "nnunet_find_best.log"
    t0 = time.perf_counter()
    with open(nn_log, "w") as f:
        rc = subprocess.call(b.nn("nnUNetv2_find_best_configuration", "4", "-c", "2d", "3d_fullres", "-f", "0", "1",
                                  "-np", "1"), env=env_nn, stdout=f, stderr=subprocess.STDOUT)
    b.seconds["select: nnUNetv2_find_best_configuration"] = round(time.perf_counter() - t0, 2)
    if rc != 0:
        raise SystemExit("nnUNetv2_find_best_configuration failed:\n" + "\n".join(nn_log.read_text().splitlines()[-25:]))
    info_ln = load(ln_res / DATASET / "inference_information.json")
    info_nn = load(nn_res / DATASET / "inference_information.json")

    def winner(info: dict) -> Path:
        return Path(info["best_model_or_ensemble"]["postprocessing_file"]).parent

    def chosen(info: dict) -> list[str]:
        return [f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}"
                for m in info["best_model_or_ensemble"]["selected_model_or_models"]]

    scores_ln, scores_nn = info_ln["all_results"], info_nn["all_results"]
    report = {
        "chosen_longnet": chosen(info_ln), "chosen_nnunet": chosen(info_nn),
        "same_choice": chosen(info_ln) == chosen(info_nn),
        "all_results_longnet": scores_ln, "all_results_nnunet": scores_nn,
        "same_candidates": sorted(scores_ln) == sorted(scores_nn),
        "max_abs_score_difference": max(abs(scores_ln[k] - scores_nn[k]) for k in scores_ln if k in scores_nn),
        "pre_pp": [info_ln["best_model_or_ensemble"]["result_on_crossval_pre_pp"],
                   info_nn["best_model_or_ensemble"]["result_on_crossval_pre_pp"]],
        "post_pp": [info_ln["best_model_or_ensemble"]["result_on_crossval_post_pp"],
                    info_nn["best_model_or_ensemble"]["result_on_crossval_post_pp"]],
        "postprocessing_longnet": _pp_decision(winner(info_ln)),
        "postprocessing_nnunet": _pp_decision(winner(info_nn)),
        "nnunet_messages": [ln for ln in nn_log.read_text().splitlines()
                            if "did not improve" in ln or "were improved" in ln],
    }
    report["same_postprocessing"] = (report["postprocessing_longnet"]["postprocessing_fns"] ==
                                     report["postprocessing_nnunet"]["postprocessing_fns"] and
                                     report["postprocessing_longnet"]["postprocessing_kwargs"] ==
                                     report["postprocessing_nnunet"]["postprocessing_kwargs"])
    # the label maps both find_best runs wrote: merged folds, the ensemble, the winner's postprocessed/
    maps = {}
    for conf in ("2d", "3d_fullres"):
        rel = Path(DATASET) / f"nnUNetTrainer__nnUNetPlans__{conf}" / "crossval_results_folds_0_1"
        maps[f"merged {conf}"] = brief(agreement(nn_res / rel, ln_res / rel))
    ens = sorted(p.name for p in (ln_res / DATASET / "ensembles").iterdir())
    for name in ens:
        maps[f"find_best ensemble {name}"] = brief(agreement(nn_res / DATASET / "ensembles" / name,
                                                              ln_res / DATASET / "ensembles" / name))
    if report["same_choice"]:
        maps["winner postprocessed/"] = brief(agreement(winner(info_nn) / "postprocessed",
                                                        winner(info_ln) / "postprocessed"))
    report["label_maps_find_best"] = maps

    # standalone ensembling of the validation probabilities (2d + 3d_fullres), per fold. nnUNetv2_ensemble reads
    # plans.json and dataset.json from its first input folder (nnUNetv2_predict writes them into its output), so
    # each validation folder is copied with the model folder's two files added.
    ens_ln, npz = [], []
    for fold in ("0", "1"):
        ins = []
        for c in ("2d", "3d_fullres"):
            model = ln_res / DATASET / f"nnUNetTrainer__nnUNetPlans__{c}"
            dest = out / f"validation_{c}_fold_{fold}"
            shutil.copytree(model / f"fold_{fold}" / "validation", dest)
            for name in ("plans.json", "dataset.json"):
                shutil.copyfile(model / name, dest / name)
            ins.append(str(dest))
        b.step("ensemble: nnUNetv2_ensemble", b.nn("nnUNetv2_ensemble", "-i", *ins, "-o", str(out / f"ens_nnunet_{fold}"),
                                                   "-np", "1", "--save_npz"), env_nn)
        b.step("ensemble: longnet_ensemble", b.ln("ensemble", "main", "-i", *ins, "-o", str(out / f"ens_longnet_{fold}"),
                                                  "-np", "1", "--save_npz"), env_ln)
        ens_ln.append(agreement(out / f"ens_nnunet_{fold}", out / f"ens_longnet_{fold}"))
        npz.append(npz_difference(out / f"ens_nnunet_{fold}", out / f"ens_longnet_{fold}"))
    report["ensemble_nnunet_vs_longnet"] = agreement_sum(ens_ln)
    report["ensemble_probabilities"] = {"files": sum(n["files"] for n in npz),
                                        "max_abs_difference": max(n["max_abs_difference"] for n in npz)}

    # apply_postprocessing on longnet's winner folder: each tool with its own decision, longnet with nnU-Net's
    src = winner(info_ln)
    pkl_ln, pkl_nn = src / "postprocessing.pkl", winner(info_nn) / "postprocessing.pkl"
    b.step("postprocessing: nnUNetv2_apply_postprocessing (nnU-Net's pkl)", b.nn(
        "nnUNetv2_apply_postprocessing", "-i", str(src), "-o", str(out / "pp_nnunet"), "-pp_pkl_file", str(pkl_nn),
        "-np", "1", "-plans_json", str(src / "plans.json"), "-dataset_json", str(src / "dataset.json")), env_nn)
    b.step("postprocessing: longnet_apply_postprocessing (longnet's decision)", b.ln(
        "postprocessing", "main_apply", "-i", str(src), "-o", str(out / "pp_longnet"), "-pp_pkl_file", str(pkl_ln),
        "-np", "1"), env_ln)
    b.step("postprocessing: longnet_apply_postprocessing (nnU-Net's decision)", b.ln(
        "postprocessing", "main_apply", "-i", str(src), "-o", str(out / "pp_longnet_nnunet_decision"),
        "-pp_pkl_file", str(pkl_nn), "-np", "1"), env_ln)
    report["apply_postprocessing"] = {
        "input": str(src),
        "nnunet_own_vs_longnet_own": brief(agreement(out / "pp_nnunet", out / "pp_longnet")),
        "nnunet_own_vs_longnet_with_nnunet_decision": brief(agreement(out / "pp_nnunet",
                                                                      out / "pp_longnet_nnunet_decision")),
        "nnunet_with_longnet_pkl": b.try_step("postprocessing: nnUNetv2_apply_postprocessing (longnet's pkl)", b.nn(
            "nnUNetv2_apply_postprocessing", "-i", str(src), "-o", str(out / "pp_nnunet_longnet_pkl"),
            "-pp_pkl_file", str(pkl_ln), "-np", "1", "-plans_json", str(src / "plans.json"),
            "-dataset_json", str(src / "dataset.json")), env_nn),
    }
    return report


def _plans_difference(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Leaves that differ between two plans files, as `key.path: a vs b` (longnet's extra 'longitudinal' block
    ignored); configuration order is compared too."""
    diffs = []
    if not prefix and list(a.get("configurations", {})) != list(b.get("configurations", {})):
        diffs.append(f"configuration order {list(a['configurations'])} vs {list(b['configurations'])}")
    for k in sorted(set(a) | set(b)):
        if not prefix and k == "longitudinal":
            continue
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            diffs += _plans_difference(x, y, f"{prefix}{k}.")
        elif x != y:
            diffs.append(f"{prefix}{k}: {x} vs {y}")
    return diffs


def part_cascade(b: Bench, inputs: Path) -> dict:
    root = b.work / "cascade"
    raw, ln_pre, ln_res = root / "raw", root / "longnet_pre", root / "longnet_results"
    nn_pre, nn_res = root / "nnunet_pre", root / "nnunet_results"
    ext = root / "ext_trainers"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / f"{NN_TRAINER}.py").write_text(_NN_TINY_TRAINER.format(name=NN_TRAINER))
    env_ln = environment(raw, ln_pre, ln_res)
    env_nn = environment(raw, nn_pre, nn_res, nnUNet_extTrainer=str(ext), nnUNet_compile="false")
    env_nn_train = dict(env_nn, nnUNet_n_proc_DA="0")  # in-process augmentation (the planner needs it unset)
    cases = labelled_cases()[:CASCADE_CASES]
    make_raw(b, root, cases, env_ln)
    confs = ("-c", "3d_fullres", "3d_lowres", "-np", "1")
    if not (b.reuse and (ln_pre / DATASET / "nnUNetPlans.json").is_file()):
        b.step("cascade: longnet_plan_and_preprocess", b.ln(
            "plan_and_preprocess", "main_plan_and_preprocess", "-d", "4", "-gpu_memory_target", CASCADE_GPU_TARGET,
            "-npfp", "1", *confs), env_ln)
    if not (b.reuse and (nn_pre / DATASET / "nnUNetPlans.json").is_file()):
        b.step("cascade: nnUNetv2_plan_and_preprocess", b.nn(
            "nnUNetv2_plan_and_preprocess", "-d", "4", "-gpu_memory_target", CASCADE_GPU_TARGET, "-npfp", "1",
            *confs), env_nn)
    plans_ln, plans_nn = load(ln_pre / DATASET / "nnUNetPlans.json"), load(nn_pre / DATASET / "nnUNetPlans.json")
    for name, plans in (("longnet", plans_ln), ("nnU-Net", plans_nn)):
        if not {"3d_lowres", "3d_cascade_fullres"} <= set(plans["configurations"]):
            raise SystemExit(f"{name} did not plan the cascade: {list(plans['configurations'])}")
    two_fold_splits(cases, ln_pre, nn_pre)
    lo, fu = plans_ln["configurations"]["3d_lowres"], plans_ln["configurations"]["3d_fullres"]
    report = {"cases": len(cases), "gpu_memory_target": float(CASCADE_GPU_TARGET),
              "plans_differences": _plans_difference(plans_ln, plans_nn),
              "configurations": list(plans_ln["configurations"]),
              "3d_lowres": {"patch_size": lo["patch_size"], "spacing": lo["spacing"]},
              "3d_fullres": {"patch_size": fu["patch_size"], "spacing": fu["spacing"]}}

    out = b.work / "cascade_compare"
    shutil.rmtree(out, ignore_errors=True)
    # (a) longnet trains and predicts; nnU-Net predicts with longnet's model folders
    for conf, folds in (("3d_lowres", ("0", "1")), ("3d_cascade_fullres", ("0",))):
        for fold in folds:
            if not b.trained(ln_res, f"{LN_CASCADE_TRAINER}__nnUNetPlans__{conf}", fold):
                b.step(f"cascade (a): longnet_train {conf} fold {fold}", b.ln(
                    "train", "main", "4", conf, fold, "-tr", LN_CASCADE_TRAINER, *BUDGET, "-device", b.device), env_ln)
    ln_lowres = ln_res / DATASET / f"{LN_CASCADE_TRAINER}__nnUNetPlans__3d_lowres"
    ln_cascade = ln_res / DATASET / f"{LN_CASCADE_TRAINER}__nnUNetPlans__3d_cascade_fullres"
    predict_nn = ("-f", "0", "-device", b.device, "-npp", "1", "-nps", "1", "--disable_progress_bar")
    b.step("cascade (a): longnet_predict -c 3d_lowres", b.ln(
        "predict", "main", "-i", str(inputs), "-o", str(out / "a_lowres_longnet"), "-d", "4", "-c", "3d_lowres",
        "-tr", LN_CASCADE_TRAINER, "-f", "0", "-device", b.device), env_ln)
    b.step("cascade (a): nnUNetv2_predict_from_modelfolder 3d_lowres", b.nn(
        "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "a_lowres_nnunet"),
        "-m", str(ln_lowres), *predict_nn), env_nn)
    b.step("cascade (a): longnet_predict -c 3d_cascade_fullres", b.ln(
        "predict", "main", "-i", str(inputs), "-o", str(out / "a_cascade_longnet"), "-d", "4",
        "-c", "3d_cascade_fullres", "-tr", LN_CASCADE_TRAINER, "-f", "0", "-device", b.device,
        "-prev_stage_predictions", str(out / "a_lowres_longnet")), env_ln)
    b.step("cascade (a): nnUNetv2_predict_from_modelfolder 3d_cascade_fullres", b.nn(
        "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "a_cascade_nnunet"),
        "-m", str(ln_cascade), *predict_nn, "-prev_stage_predictions", str(out / "a_lowres_longnet")), env_nn)
    report["a_longnet_models"] = {
        "lowres_nnunet_vs_longnet": agreement(out / "a_lowres_nnunet", out / "a_lowres_longnet"),
        "cascade_nnunet_vs_longnet": agreement(out / "a_cascade_nnunet", out / "a_cascade_longnet")}

    # (b) nnU-Net preprocesses, trains and predicts; longnet predicts with nnU-Net's model folders
    for conf, folds in (("3d_lowres", ("0", "1")), ("3d_cascade_fullres", ("0",))):
        for fold in folds:
            if not b.trained(nn_res, f"{NN_TRAINER}__nnUNetPlans__{conf}", fold):
                b.step(f"cascade (b): nnUNetv2_train {conf} fold {fold}", b.nn(
                    "nnUNetv2_train", "4", conf, fold, "-tr", NN_TRAINER, "-device", b.device), env_nn_train)
    nn_lowres = nn_res / DATASET / f"{NN_TRAINER}__nnUNetPlans__3d_lowres"
    nn_cascade = nn_res / DATASET / f"{NN_TRAINER}__nnUNetPlans__3d_cascade_fullres"
    b.step("cascade (b): nnUNetv2_predict_from_modelfolder 3d_lowres", b.nn(
        "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "b_lowres_nnunet"),
        "-m", str(nn_lowres), *predict_nn), env_nn)
    b.step("cascade (b): longnet_predict -m 3d_lowres", b.ln(
        "predict", "main", "-i", str(inputs), "-o", str(out / "b_lowres_longnet"), "-m", str(nn_lowres),
        "-f", "0", "-device", b.device), env_ln)
    b.step("cascade (b): nnUNetv2_predict_from_modelfolder 3d_cascade_fullres", b.nn(
        "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "b_cascade_nnunet"),
        "-m", str(nn_cascade), *predict_nn, "-prev_stage_predictions", str(out / "b_lowres_nnunet")), env_nn)
    b.step("cascade (b): longnet_predict -m 3d_cascade_fullres", b.ln(
        "predict", "main", "-i", str(inputs), "-o", str(out / "b_cascade_longnet"), "-m", str(nn_cascade),
        "-f", "0", "-device", b.device, "-prev_stage_predictions", str(out / "b_lowres_nnunet")), env_ln)
    report["b_nnunet_models"] = {
        "lowres_nnunet_vs_longnet": agreement(out / "b_lowres_nnunet", out / "b_lowres_longnet"),
        "cascade_nnunet_vs_longnet": agreement(out / "b_cascade_nnunet", out / "b_cascade_longnet")}
    return report


# ---------------------------------------------------------------------------------------------------- output

def pct(a: dict) -> str:
    return f"{a['overall_agreement'] * 100:.4f}% ({a['differing_voxels']} of {a['voxels']} differ)"


def table(report: dict) -> list[tuple[str, str]]:
    rows = []
    if "2d" in report:
        r = report["2d"]
        rows.append(("2d: longnet model, nnU-Net predictor vs longnet_predict -m (folds 0 1, 6 cases)",
                     pct(r["nnunet_vs_longnet"])))
    if "cascade" in report:
        r = report["cascade"]
        rows.append(("cascade: plans, longnet vs nnU-Net planner (-gpu_memory_target 0.02)",
                     "identical" if not r["plans_differences"] else "differ: " + "; ".join(r["plans_differences"])))
        for side, label in (("a_longnet_models", "(a) longnet-trained"), ("b_nnunet_models", "(b) nnU-Net-trained")):
            rows.append((f"cascade {label} 3d_lowres: nnU-Net vs longnet", pct(r[side]["lowres_nnunet_vs_longnet"])))
            rows.append((f"cascade {label} 3d_cascade_fullres: nnU-Net vs longnet",
                         pct(r[side]["cascade_nnunet_vs_longnet"])))
    if "select" in report:
        r = report["select"]
        rows.append(("find_best: chosen (longnet | nnU-Net)",
                     f"{' + '.join(r['chosen_longnet'])} | {' + '.join(r['chosen_nnunet'])}"))
        rows.append(("find_best: all_results max |difference|", f"{r['max_abs_score_difference']:.2e}"))
        rows.append(("find_best: postprocessing (longnet | nnU-Net)",
                     f"{r['postprocessing_longnet']['postprocessing_kwargs']} | "
                     f"{r['postprocessing_nnunet']['postprocessing_kwargs']}"))
        rows.append(("find_best: post-pp fg Dice (longnet | nnU-Net)", f"{r['post_pp'][0]:.6f} | {r['post_pp'][1]:.6f}"))
        for k, v in r["label_maps_find_best"].items():
            rows.append((f"find_best label maps, {k}", pct(v)))
        rows.append(("ensemble: nnUNetv2_ensemble vs longnet_ensemble (2d + 3d_fullres validation npz)",
                     pct(r["ensemble_nnunet_vs_longnet"])))
        rows.append(("ensemble: averaged probabilities max |difference|",
                     f"{r['ensemble_probabilities']['max_abs_difference']:.2e}"))
        ap = r["apply_postprocessing"]
        rows.append(("apply_postprocessing: nnU-Net (own pkl) vs longnet (own decision)",
                     pct(ap["nnunet_own_vs_longnet_own"])))
        rows.append(("apply_postprocessing: nnU-Net (own pkl) vs longnet (nnU-Net's decision)",
                     pct(ap["nnunet_own_vs_longnet_with_nnunet_decision"])))
        rows.append(("apply_postprocessing: nnU-Net given longnet's pkl",
                     f"exit {ap['nnunet_with_longnet_pkl']['exit_status']}"))
    rows.append(("wall time of the whole run", f"{report['wall_seconds']:.0f} s"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--work", type=Path, default=Path("/tmp/longnet_nnunet_workflow"),
                   help="scratch folder (default %(default)s)")
    p.add_argument("--venv", type=Path, default=Path("/work/nnunet_venv"),
                   help="virtual environment with nnunetv2==2.8.1 (default %(default)s)")
    p.add_argument("--parts", nargs="+", default=["2d", "select", "cascade"], choices=["2d", "select", "cascade"],
                   help="which comparisons to run (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for both tools (default cpu)")
    p.add_argument("--reuse", action="store_true",
                   help="keep --work and skip trainings/preprocessing already done (default: start from scratch)")
    args = p.parse_args()
    for tool in ("nnUNetv2_predict_from_modelfolder", "nnUNetv2_train", "nnUNetv2_find_best_configuration"):
        if not (args.venv / "bin" / tool).is_file():
            raise SystemExit(f"{args.venv / 'bin' / tool} not found: install nnunetv2==2.8.1 into {args.venv}")
    work = args.work.resolve()
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(work, args.venv, args.device, args.reuse)
    t0 = time.perf_counter()
    inputs = prepare_inputs(work / "inputs")
    report: dict = {"inputs": sorted(p.name for p in inputs.iterdir()), "device": args.device}
    if "2d" in args.parts or "select" in args.parts:
        print("select/2d: 20-case subset, default plans, 2 folds, 2d + 3d_fullres trained by longnet", flush=True)
        sel = prepare_select(b, inputs)
        report["subset"] = {"cases": SELECT_CASES, "planned": sel["planned"], "splits": sel["splits"]}
        if "2d" in args.parts:
            print("2d: predictions", flush=True)
            report["2d"] = part_2d(b, sel, inputs)
        if "select" in args.parts:
            print("select: find_best, ensemble, postprocessing", flush=True)
            report["select"] = part_select(b, sel)
    if "cascade" in args.parts:
        print("cascade: 12-case subset, both tools", flush=True)
        report["cascade"] = part_cascade(b, inputs)
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    report["step_seconds"] = b.seconds
    rows = table(report)
    report["table"] = [{"check": k, "result": v} for k, v in rows]
    (work / "report.json").write_text(json.dumps(report, indent=4, default=str))
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"\nreport: {work / 'report.json'}; command log: {b.log}")


if __name__ == "__main__":
    main()
