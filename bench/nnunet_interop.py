"""Model zips between longnet and nnU-Net 2.8.1, and whether both predict the same from the same model.

nnU-Net lives in its own virtual environment (never a longnet dependency), e.g.
    python3 -m venv --system-site-packages /work/nnunet_venv && /work/nnunet_venv/bin/pip install nnunetv2==2.8.1

Forward: a longnet model is exported with `longnet_export_model_to_zip`, installed with nnU-Net's
`nnUNetv2_install_pretrained_model_from_zip` into a scratch nnUNet_results, predicted there with
`nnUNetv2_predict_from_modelfolder`, and predicted from the original folder with `longnet_predict -m`.
Reverse: an nnU-Net model folder is exported with `nnUNetv2_export_model_to_zip`, installed with
`longnet_install_pretrained_model_from_zip`, and predicted with `longnet_predict -m` and with nnU-Net.

nnU-Net resolves the trainer class named in the checkpoint (`trainer_name`) among its own trainers. A model
trained with a trainer nnU-Net does not ship (the reference model's `nnUNetTrainer_cpubench`) is made
predictable by a stub subclass of nnU-Net's default trainer, found through nnU-Net's `nnUNet_extTrainer`
search path. nnU-Net's exporter also requires `progress.png` and `validation/summary.json` in every fold;
a model folder without them gets placeholders in the scratch copy (reported).

    python bench/nnunet_interop.py --train-tiny            # trains a tiny longnet model first (CPU, ~minutes)
    python bench/nnunet_interop.py --results $LONGNET_RESULTS --dataset Dataset004_Hippocampus
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TASK04 = SHARED / "data" / "Task04_Hippocampus"
REFERENCE = SHARED / "reference" / "nnunetv2-2.8.1" / "Dataset004_Hippocampus"
REFERENCE_MODEL = REFERENCE / "model" / "nnUNetTrainer_cpubench__nnUNetPlans__3d_fullres"
PREDICT_CASES = ("017", "019", "033", "035", "037", "049")  # the reference predictions' cases (fold-0 validation)
TINY_TRAIN_CASES = 8  # the first labelled Task04 cases outside PREDICT_CASES
_LAUNCH = ("import sys, importlib; m = importlib.import_module(sys.argv[1]); "
           "sys.exit(getattr(m, sys.argv[2])(sys.argv[3:]))")
_STUB_TRAINER = '''from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    """Stand-in for a trainer nnU-Net does not ship; inference only needs the default network builder."""
'''


def run(cmd: list[str], env: dict, log: Path) -> float:
    """Run one command, its output appended to `log`; a failure stops the bench with the log's tail."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = log.read_text().splitlines()[-25:]
        raise SystemExit(f"command failed (exit {rc}): {' '.join(cmd)}\n" + "\n".join(tail))
    return time.perf_counter() - t0


def longnet(module: str, func: str, *args: str) -> list[str]:
    return [sys.executable, "-c", _LAUNCH, f"longnet.cli.{module}", func, *args]


def nnunet(venv: Path, command: str, *args: str) -> list[str]:
    return [str(venv / "bin" / command), *args]


def environment(raw: Path, pre: Path, results: Path, **extra: str) -> dict:
    """Both tools' root variables pointed at one place, single-threaded (2-core machines)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", nnUNet_def_n_proc="1",
               nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(results),
               LONGNET_RAW=str(raw), LONGNET_PREPROCESSED=str(pre), LONGNET_RESULTS=str(results))
    env.update(extra)
    for p in (raw, pre, results):
        p.mkdir(parents=True, exist_ok=True)
    return env


def prepare_inputs(dest: Path) -> Path:
    """The six reference cases' images as an nnU-Net input folder (`{case}_0000.nii.gz`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for c in PREDICT_CASES:
        shutil.copyfile(TASK04 / "imagesTr" / f"hippocampus_{c}.nii.gz", dest / f"hippocampus_{c}_0000.nii.gz")
    return dest


def train_tiny(work: Path, log: Path, device: str) -> Path:
    """8 Task04 cases -> convert, plan 3d_fullres, one epoch of two iterations on fold 0; returns the results root."""
    env = environment(work / "longnet_raw", work / "longnet_pre", work / "longnet_results")
    results = work / "longnet_results"
    if (results / "Dataset004_Hippocampus" / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0" /
            "checkpoint_final.pth").is_file():
        return results
    task = work / "msd" / "Task04_Hippocampus"
    names = [p.name for p in sorted((TASK04 / "labelsTr").glob("hippocampus_*.nii.gz"))
             if p.name[len("hippocampus_"):-len(".nii.gz")] not in PREDICT_CASES][:TINY_TRAIN_CASES]
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(TASK04 / sub / name, task / sub / name)
    shutil.copyfile(TASK04 / "dataset.json", task / "dataset.json")
    if not (work / "longnet_raw" / "Dataset004_Hippocampus").is_dir():
        run(longnet("convert", "main", "-i", str(task), "-overwrite_id", "4", "-np", "1"), env, log)
    run(longnet("plan_and_preprocess", "main_plan_and_preprocess", "-d", "4", "-c", "3d_fullres", "-np", "1"),
        env, log)
    run(longnet("train", "main", "4", "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "2",
                "-device", device), env, log)
    return results


def read_labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def agreement(a_dir: Path, b_dir: Path) -> dict:
    """Per case and overall: fraction of voxels with the same label, and per-label Dice between the two."""
    cases, same, total = {}, 0, 0
    for pa in sorted(a_dir.glob("*.nii.gz")):
        pb = b_dir / pa.name
        if not pb.is_file():
            raise SystemExit(f"{pb} missing (present in {a_dir})")
        a, b = read_labels(pa), read_labels(pb)
        if a.shape != b.shape:
            raise SystemExit(f"{pa.name}: shapes differ {a.shape} vs {b.shape}")
        eq = int((a == b).sum())
        dice = {}
        for lab in sorted((set(np.unique(a)) | set(np.unique(b))) - {0}):
            inter, size = int(((a == lab) & (b == lab)).sum()), int((a == lab).sum() + (b == lab).sum())
            dice[int(lab)] = 2 * inter / size if size else 1.0
        cases[pa.name] = {"agreement": eq / a.size, "differing_voxels": a.size - eq, "dice": dice}
        same, total = same + eq, total + a.size
    if not cases:
        raise SystemExit(f"no predictions in {a_dir}")
    return {"overall_agreement": same / total, "voxels": total, "differing_voxels": total - same, "cases": cases}


def zip_members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def same_bytes(members: list[str], a_root: Path, b_root: Path) -> bool:
    return all((a_root / m).read_bytes() == (b_root / m).read_bytes() for m in members)


def forward(args, work: Path, inputs: Path, log: Path) -> dict:
    """longnet model -> our zip -> nnU-Net's installer -> nnU-Net and longnet predictions."""
    out = work / "forward"
    shutil.rmtree(out, ignore_errors=True)
    tpc = f"{args.trainer}__{args.plans}__{args.configuration}"
    zip_path = out / "longnet_model.zip"
    out.mkdir(parents=True)
    env_ln = environment(out / "raw", out / "pre", args.results)
    t_export = run(longnet("model_sharing", "main_export", "-d", args.dataset, "-o", str(zip_path), "-c",
                           args.configuration, "-tr", args.trainer, "-p", args.plans, "-f", args.fold), env_ln, log)
    members = zip_members(zip_path)
    nn_results = out / "nnunet_results"
    env_nn = environment(out / "raw", out / "pre", nn_results)
    nn_zip = out / "same_model_by_nnunet.zip"  # nnU-Net's exporter on the same folder: the member lists must match
    run(nnunet(args.venv, "nnUNetv2_export_model_to_zip", "-d", args.dataset, "-o", str(nn_zip), "-c",
               args.configuration, "-tr", args.trainer, "-p", args.plans, "-f", args.fold), env_ln, log)
    run(nnunet(args.venv, "nnUNetv2_install_pretrained_model_from_zip", str(zip_path)), env_nn, log)
    installed = nn_results / args.dataset / tpc
    t_nn = run(nnunet(args.venv, "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "pred_nnunet"),
                      "-m", str(installed), "-f", args.fold, "-device", args.device, "-npp", "1", "-nps", "1",
                      "--disable_progress_bar"), env_nn, log)
    t_ln = run(longnet("predict", "main", "-i", str(inputs), "-o", str(out / "pred_longnet"), "-m",
                       str(args.results / args.dataset / tpc), "-f", args.fold, "-device", args.device), env_ln, log)
    return {"model": str(args.results / args.dataset / tpc), "zip_members": members,
            "same_members_as_nnunet_export": zip_members(nn_zip) == members,
            "installed_by_nnunet_identical": same_bytes(members, args.results, nn_results),
            "seconds": {"export": t_export, "predict_nnunet": t_nn, "predict_longnet": t_ln},
            "nnunet_vs_longnet": agreement(out / "pred_nnunet", out / "pred_longnet")}


def reverse(args, work: Path, inputs: Path, log: Path) -> dict:
    """nnU-Net model folder -> nnU-Net's zip -> our installer -> longnet and nnU-Net predictions."""
    out = work / "reverse"
    shutil.rmtree(out, ignore_errors=True)
    src = Path(args.reference_model)
    trainer, plans, conf = src.name.split("__")
    dataset = args.reference_dataset
    nn_results = out / "nnunet_results"
    model = nn_results / dataset / src.name
    shutil.copytree(src, model)
    placeholders = []
    for fold_dir in sorted(model.glob("fold_*")):  # nnU-Net's exporter needs these two files in every fold
        for name, content in (("progress.png", None), ("validation/summary.json", "{}")):
            if not (fold_dir / name).is_file():
                (fold_dir / name).parent.mkdir(parents=True, exist_ok=True)
                if content is None:
                    import matplotlib.pyplot as plt
                    plt.imsave(fold_dir / name, np.zeros((4, 4, 3), np.uint8))
                else:
                    (fold_dir / name).write_text(content)
                placeholders.append(f"{fold_dir.name}/{name}")
    stub = out / "ext_trainers"
    stub.mkdir(parents=True)
    (stub / f"{trainer}.py").write_text(_STUB_TRAINER.format(name=trainer))
    env_nn = environment(out / "raw", out / "pre", nn_results, nnUNet_extTrainer=str(stub))
    zip_path = out / "nnunet_model.zip"
    run(nnunet(args.venv, "nnUNetv2_export_model_to_zip", "-d", dataset, "-o", str(zip_path), "-c", conf,
               "-tr", trainer, "-p", plans, "-f", args.reference_fold), env_nn, log)
    members = zip_members(zip_path)
    ln_results = out / "longnet_results"
    env_ln = environment(out / "raw", out / "pre", ln_results)
    run(longnet("model_sharing", "main_install", str(zip_path)), env_ln, log)
    installed = ln_results / dataset / src.name
    t_ln = run(longnet("predict", "main", "-i", str(inputs), "-o", str(out / "pred_longnet"), "-m", str(installed),
                       "-f", args.reference_fold, "-device", args.device), env_ln, log)
    t_nn = run(nnunet(args.venv, "nnUNetv2_predict_from_modelfolder", "-i", str(inputs), "-o", str(out / "pred_nnunet"),
                      "-m", str(model), "-f", args.reference_fold, "-device", args.device, "-npp", "1", "-nps", "1",
                      "--disable_progress_bar"), env_nn, log)
    report = {"model": str(src), "placeholders_added_for_nnunet_export": placeholders, "zip_members": members,
              "installed_by_longnet_identical": same_bytes(members, nn_results, ln_results),
              "seconds": {"predict_longnet": t_ln, "predict_nnunet": t_nn},
              "nnunet_vs_longnet": agreement(out / "pred_nnunet", out / "pred_longnet")}
    stored = REFERENCE / "predictions_tta"
    if stored.is_dir() and src.resolve() == REFERENCE_MODEL.resolve():
        report["stored_nnunet_reference_vs_longnet"] = agreement(stored, out / "pred_longnet")
    return report


def summary_line(name: str, a: dict) -> str:
    return (f"{name}: {a['overall_agreement'] * 100:.4f}% of {a['voxels']} voxels agree "
            f"({a['differing_voxels']} differ; per case " +
            ", ".join(f"{k.split('.')[0]} {v['agreement'] * 100:.3f}%" for k, v in a["cases"].items()) + ")")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--work", type=Path, default=Path("/tmp/longnet_nnunet_interop"),
                   help="scratch folder (default %(default)s)")
    p.add_argument("--venv", type=Path, default=Path("/work/nnunet_venv"),
                   help="virtual environment with nnunetv2==2.8.1 (default %(default)s)")
    p.add_argument("--results", type=Path, default=None,
                   help="longnet results root with the model to export (default: $LONGNET_RESULTS, or the tiny "
                        "model with --train-tiny)")
    p.add_argument("--train-tiny", action="store_true",
                   help="first train a tiny longnet model (8 Task04 cases, 1 epoch x 2 iterations) under --work")
    p.add_argument("--dataset", default="Dataset004_Hippocampus",
                   help="dataset of the longnet model (default %(default)s)")
    p.add_argument("--configuration", default="3d_fullres", help="configuration (default %(default)s)")
    p.add_argument("--trainer", default="nnUNetTrainer", help="trainer of the longnet model (default %(default)s)")
    p.add_argument("--plans", default="nnUNetPlans", help="plans of the longnet model (default %(default)s)")
    p.add_argument("--fold", default="0", help="fold to export and predict with (default %(default)s)")
    p.add_argument("--reference-model", default=str(REFERENCE_MODEL),
                   help="nnU-Net model folder for the reverse direction (default: the shared reference model)")
    p.add_argument("--reference-dataset", default="Dataset004_Hippocampus",
                   help="dataset name the reverse model is filed under (default %(default)s)")
    p.add_argument("--reference-fold", default="0", help="fold of the reverse model (default %(default)s)")
    p.add_argument("--images", type=Path, default=None,
                   help="input folder ({case}_0000.nii.gz) to predict (default: six Task04 cases)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for both tools (default cpu)")
    p.add_argument("--skip-forward", action="store_true", help="only run the nnU-Net -> longnet direction")
    p.add_argument("--skip-reverse", action="store_true", help="only run the longnet -> nnU-Net direction")
    args = p.parse_args()

    for tool in ("nnUNetv2_install_pretrained_model_from_zip", "nnUNetv2_export_model_to_zip",
                 "nnUNetv2_predict_from_modelfolder"):
        if not (args.venv / "bin" / tool).is_file():
            raise SystemExit(f"{args.venv / 'bin' / tool} not found: install nnunetv2==2.8.1 into {args.venv}")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    inputs = args.images or prepare_inputs(work / "inputs")
    if args.train_tiny:
        args.results = train_tiny(work, log, args.device)
    elif args.results is None and os.environ.get("LONGNET_RESULTS"):
        args.results = Path(os.environ["LONGNET_RESULTS"])
    report: dict = {"inputs": str(inputs)}
    if not args.skip_forward:
        if args.results is None:
            raise SystemExit("give --results (a longnet results root) or --train-tiny for the forward direction")
        args.results = args.results.resolve()
        report["forward"] = forward(args, work, inputs, log)
        f = report["forward"]
        print(f"forward zip: {len(f['zip_members'])} members (same list as nnU-Net's exporter writes: "
              f"{f['same_members_as_nnunet_export']}), installed by nnU-Net byte-identical: "
              f"{f['installed_by_nnunet_identical']}")
        print(summary_line("forward, nnU-Net vs longnet", report["forward"]["nnunet_vs_longnet"]))
    if not args.skip_reverse:
        report["reverse"] = reverse(args, work, inputs, log)
        r = report["reverse"]
        print(f"reverse zip: {len(r['zip_members'])} members, installed by longnet byte-identical: "
              f"{r['installed_by_longnet_identical']}; placeholders for nnU-Net's exporter: "
              f"{r['placeholders_added_for_nnunet_export'] or 'none'}")
        print(summary_line("reverse, nnU-Net vs longnet", r["nnunet_vs_longnet"]))
        if "stored_nnunet_reference_vs_longnet" in r:
            print(summary_line("reverse, stored nnU-Net reference vs longnet", r["stored_nnunet_reference_vs_longnet"]))
    (work / "report.json").write_text(json.dumps(report, indent=4))
    print(f"report: {work / 'report.json'}; command log: {log}")


if __name__ == "__main__":
    main()
