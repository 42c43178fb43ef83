"""TFM benchmark on the demo cohort: does Temporal Flow Matching beat the last context image (LCI)?

    python bench/tfm_demo.py [--out /tmp/tfm_bench] [--epochs 12 --iters 20] [--threads 1]

One script, in-process, through the real commands:
1. the demo dataset (`generate_demo_dataset`, the `longnet_demo` default settings: 12 train + 4 test subjects,
   32×40×32, seed 0); plan + preprocess 3d_fullres with `--align rigid`;
2. train TFMTrainer on fold `all` (demo budget: small U-Net, 16×24×24 crops, lr 1e-3, σ = 0; see DEMO_NET; the
   default context residual with its least-squares linear forecast);
3. forecast every test subject's last visit from its earlier ones (`longnet_predict -tr TFMTrainer
   --patients patientsTs.json --with-lci --with-context-mean`: also the LCI and the untrained model's forecast,
   the mean of the filled context);
4. `longnet_evaluate --task forecast` against the true target on the same grid; print one table: NRMSE, PSNR,
   SSIM overall and inside the region that changed (|target − LCI| > 0.1), for TFM, LCI and the context mean.
Default budget: < 10 min on 2 loaded CPU cores (one torch thread: much faster than two when cores are shared).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

DID = 990
CONFIG = "3d_fullres"
TRAINER = "TFMTrainer"
DEMO_NET = ["--base-channels", "8", "--channel-mult", "1,2,2", "--attention-levels", "none", "--no-mid-attention",
            "--downsample", "all", "--patch-size", "16,24,24", "--batch-size", "4", "--sigma", "0"]


def prepare_data(n_train: int, n_test: int, shape: tuple[int, int, int], seed: int, reuse: bool) -> Path:
    from longnet.demo.recipes import call_command
    from longnet.demo.synthetic import dataset_folder_name, generate_demo_dataset

    raw = Path(os.environ["LONGNET_RAW"]) / dataset_folder_name(DID)
    pre = Path(os.environ["LONGNET_PREPROCESSED"]) / dataset_folder_name(DID)
    if reuse and any(pre.glob("nnUNetPlans_3d_fullres*/plan_fingerprint.json")):
        return raw
    for p in (raw, pre):
        shutil.rmtree(p, ignore_errors=True)
    raw = generate_demo_dataset(raw.parent, n_train, n_test, shape, seed=seed, dataset_id=DID)
    call_command("plan_and_preprocess", "main_plan_and_preprocess",
                 ["-d", str(DID), "-c", CONFIG, "-np", "2", "--align", "rigid"])
    return raw


def predict(model_folder: Path, raw: Path, dest: Path) -> None:
    """`longnet_predict -tr TFMTrainer --patients patientsTs.json --with-lci --with-context-mean`."""
    from longnet.demo.recipes import call_command

    call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(dest), "-m", str(model_folder), "-f", "all",
                                     "--patients", str(raw / "patientsTs.json"), "--with-lci",
                                     "--with-context-mean", "-device", "cpu"])


def evaluate(pred_dir: Path, refs: Path, summary: Path) -> dict:
    from longnet.demo.recipes import call_command

    call_command("evaluate", "main", [str(refs / "reference"), str(pred_dir), "--task", "forecast", "--baseline",
                                      str(refs / "lci"), "-o", str(summary)])
    return json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/tfm_bench")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--iters", type=int, default=20, help="iterations per epoch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=12)
    p.add_argument("--n-test", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--train-seed", type=int, default=12345)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse-data", action="store_true", help="keep an existing preprocessed dataset")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more TFMTrainer options")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    os.environ.setdefault("LONGNET_N_PROC_DA", "0")
    os.environ.setdefault("LONGNET_COMPILE", "0")
    from longnet.demo.recipes import call_command, demo_environment

    with demo_environment(out) as roots:
        t0 = time.time()
        raw = prepare_data(args.n_train, args.n_test, (32, 40, 32), args.seed, args.reuse_data)
        t_data = time.time() - t0
        results = Path(roots["LONGNET_RESULTS"]) / raw.name / f"{TRAINER}__nnUNetPlans__{CONFIG}"
        shutil.rmtree(results, ignore_errors=True)
        options = DEMO_NET + ["--lr", str(args.lr), "--epochs", str(args.epochs), "--iters-per-epoch",
                              str(args.iters), "--seed", str(args.train_seed)] + list(args.extra)
        t1 = time.time()
        call_command("train", "main", [str(DID), CONFIG, "all", "-tr", TRAINER, "-device", "cpu"] + options)
        t_train = time.time() - t1
        preds = out / "predictions"
        shutil.rmtree(preds, ignore_errors=True)
        t2 = time.time()
        predict(results, raw, preds)
        t_pred = time.time() - t2
        tfm = evaluate(preds, preds, preds / "tfm_summary.json")
        ctx = evaluate(preds / "context_mean", preds, preds / "context_mean_summary.json")
        side, side_ctx = tfm["side_by_side"], ctx["side_by_side"]
        rows = [("TFM (trained)", side["overall"]["prediction"], side["changed"]["prediction"]),
                ("LCI", side["overall"]["LCI"], side["changed"]["LCI"]),
                ("mean of filled context (untrained TFM)", side_ctx["overall"]["prediction"],
                 side_ctx["changed"]["prediction"])]
        n = len(tfm["metric_per_case"])
        print(f"\nTFM vs LCI on the demo test split ({args.n_test} subjects, {n} forecast images = subjects x "
              f"channels; changed region = {side['changed']['definition']}, "
              f"{100 * side['changed']['fraction']:.1f}% of voxels)")
        head = f"{'method':<40}{'NRMSE':>8}{'PSNR':>8}{'SSIM':>8} |{'NRMSE_chg':>10}{'PSNR_chg':>9}{'SSIM_chg':>9}"
        print(head + "\n" + "-" * len(head))
        for name, a, b in rows:
            print(f"{name:<40}{a['NRMSE']:>8.4f}{a['PSNR']:>8.2f}{a['SSIM']:>8.4f} |{b['NRMSE']:>10.4f}"
                  f"{b['PSNR']:>9.2f}{b['SSIM']:>9.4f}")
        beats = (rows[0][1]["NRMSE"] < rows[1][1]["NRMSE"] and rows[0][1]["PSNR"] > rows[1][1]["PSNR"]
                 and rows[0][1]["SSIM"] >= rows[1][1]["SSIM"])
        total = time.time() - t0
        print(f"\nTFM beats LCI on NRMSE and PSNR and is not worse on SSIM: {'yes' if beats else 'NO'}")
        print(f"time: data+preprocessing {t_data:.0f} s, training {t_train:.0f} s, forecasting {t_pred:.0f} s, "
              f"total {total:.0f} s (torch threads {args.threads}; alignment: rigid)")
        table = {r[0]: {"overall": r[1], "changed": r[2]} for r in rows}
        (out / "tfm_bench.json").write_text(json.dumps({"rows": table, "beats_lci": beats,
                                                        "seconds": round(total, 1), "options": options}, indent=2))
        return 0


if __name__ == "__main__":
    sys.exit(main())
