"""GPU benchmark on one NVIDIA card (H100/H200 class): training and prediction speed against the compiled
network-only step and against nnU-Net 2.8.1 on the same card and data, plus the plugins' GPU checks, printed as one
table (card name in every row) + JSON.

On a CUDA machine with the project installed: `python3 bench/gpu_bench.py`. On an air-gapped machine that has only
torch, build the offline bundle first (`bash bench/gpu_prepare.sh`, which writes bench/wheels/wheels.tar.xz), copy
the checkout there and run
    set -o pipefail; PYTHONUNBUFFERED=1 python3 bench/gpu_bench.py --install --budget-s 480 2>&1 | tee gpu_bench.log
Writes gpu_bench.log (this output), gpu_bench.json (rows + raw results) and gpu_bench_logs.tar.gz (the log of every
subprocess) into --out. The bundle is built for Python 3.12 by default (PYVER in gpu_prepare.sh).

Building the bundle (where PyPI is reachable; the target has torch/numpy/scipy/... but none of our other packages):
    bash bench/gpu_prepare.sh     # = pip download --no-deps --only-binary=:all: --python-version 3.12
                                  #   --implementation cp --platform manylinux_2_{28,27,24,17}_x86_64 ... -d TMP
                                  #   SimpleITK==2.5.7 blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2
                                  #   dynamic-network-architectures==0.4.4 batchgeneratorsv2==0.3.6
                                  #   batchgenerators==0.25.5 monai==1.6.1 connected-components-3d==4.1.1 nibabel==5.4.2
                                  #   + pip wheel --no-deps acvl-utils==0.2.6 nnunetv2==2.8.1 (sdists), then the
                                  #   wheels re-stored uncompressed and xz'd: 68 MiB of wheels -> ~40 MiB to carry
`--install` unpacks that archive, installs the longnet set + this repo (`pip install --no-index --no-deps
--no-build-isolation -e .`) into the running python, nnunetv2 into /tmp/nnunet_venv (--system-site-packages + a .pth
to this python's site dirs), then re-executes itself without --install.

Sections (each in try/except: a failure becomes that row's error; when the budget runs out the rest are skipped
and the table is still printed):
  data      synthetic raw datasets: brain (8 cases ~160³, head ellipsoid, 3 labels: nnU-Net plans 128³ batch 2) and
            hippo (260 cases ~36×50×35, 2 labels: Task04-like plans); longnet_plan_and_preprocess (nnU-Net's
            nnUNetv2_plan_and_preprocess runs concurrently in the background)
  ceiling   the plan's network + loss + SGD step alone (fp16 autocast + GradScaler, synthetic batch on the GPU),
            eager and torch.compile (also warms the inductor cache the trainers then reuse)
  e2e       longnet_train ... --val-iters 0 --augmentation gpu: ms/iteration = mean epoch time after the first /
            iterations (--val-iters 0, not 1: longnet's epoch_time would include the checkpoint_best write,
            nnU-Net's excludes it; without validation both epoch times are the training loop alone)
  nnunet    nnUNetv2_train with a shortened trainer (same epochs x iterations, no per-epoch validation)
  predict   longnet_predict and nnUNetv2_predict (TTA on) with the nnU-Net-trained weights; s/case = wall/cases
            (process start and model loading included); voxel agreement
  plugins   run_check() of bench/longrep_gpu.py, stamp_gpu.py, tfm_gpu.py (eager; --plugin-compile: compiled)
  cpuaug    longnet_train ... --augmentation cpu (last: a comparison only, the first to drop)
Ratios: e2e/compiled ceiling (<= 1.15), longnet/nnU-Net e2e (<= 0.6), predict (<= 0.5), agreement (>= 0.999).
`--smoke`: the same on CPU, tiny datasets, 2 iterations, no compile, training/prediction on the hippo-like set
only (< 2 min on 2 cores); nnU-Net rows only when `--nnunet-python` imports nnunetv2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_common import (LONGNET, NNUNET, NNUNET_TRAINER, NNUNET_TRAINER_SRC, RUNNER, WHEELS,  # noqa: E402
                         Budget, BudgetExceeded, epoch_times, install_offline, kill_group, log_tail,
                         enable_tf32, nnunet_available, plain_model_copy, run_logged, time_steps, voxel_agreement,
                         write_synthetic_dataset)

SECTIONS = ("data", "ceiling", "e2e", "nnunet", "predict", "plugins", "cpuaug")


@dataclass
class DS:
    """One synthetic benchmark dataset and its run sizes."""
    key: str
    did: int
    name: str
    cases: int
    shape: tuple[int, int, int]
    labels: int
    body: bool
    iters: int
    pred_cases: int
    ceiling_steps: int

    @property
    def folder(self) -> str:
        return f"Dataset{self.did:03d}_{self.name}"


class Skipped(Exception):
    """Section not run (budget, missing prerequisite): shown in the table, not a failure."""


class Bench:
    """The sections, their rows (one per measurement, error or skip) and the raw results for the ratios."""

    def __init__(self, args: argparse.Namespace, budget: Budget):
        import torch

        self.a, self.budget = args, budget
        self.dev = "cpu" if args.smoke else "cuda"
        cuda = self.dev == "cuda" and torch.cuda.is_available()
        self.card = torch.cuda.get_device_name(0) if cuda else ("cpu" if args.smoke else "no CUDA device")
        self.w = Path(args.work)
        self.rows: list[dict] = []
        self.res: dict[str, Any] = {}
        self.py = sys.executable
        self.nnpy = args.nnunet_python
        self.nn_missing = nnunet_available(self.nnpy)
        self.np = 1 if args.smoke else max(1, min(8, (os.cpu_count() or 2) // 2))
        self.nn_pre_proc: Any = None  # nnU-Net's plan_and_preprocess, in the background
        self.nn_pre_t0, self.nn_pre_done = 0.0, None
        if args.smoke:
            torch.set_num_threads(1)
            self.ds = [DS("brain", 501, "SynthBrain", 3, (20, 20, 20), 3, True, 2, 1, 2),
                       DS("hippo", 502, "SynthHippo", 6, (16, 20, 16), 2, False, 2, 1, 2)]  # smaller: nnU-Net NaN
        else:
            self.ds = [DS("brain", 501, "SynthBrain", args.brain_cases, (args.brain_size,) * 3, 3, True,
                          args.brain_iters, 4, 20),
                       DS("hippo", 502, "SynthHippo", args.hippo_cases, (36, 50, 35), 2, False, args.hippo_iters,
                          20, 50)]
        self.trained = self.ds[1:] if args.smoke else self.ds  # smoke: the process-heavy sections on one dataset

    # ------------------------------------------------------------------ plumbing
    def row(self, section: str, item: str, metric: str, value: Any = None, target: str = "", ok: Any = "",
            note: str = "", error: str = "") -> None:
        r = dict(section=section, item=item, metric=metric, value=value, target=target, ok=ok, card=self.card,
                 note=note, error=error)
        self.rows.append(r)
        print(f"[{time.strftime('%H:%M:%S')} {self.budget.left():5.0f}s left] " + " ".join(
            f"{k}={v}" for k, v in r.items() if v not in ("", None) and k != "card"), flush=True)

    def section(self, section: str, item: str, fn: Callable[[], None], need_s: float = 15) -> None:
        """Run one unit; budget, skips and errors become rows."""
        if section not in self.a.sections:
            return
        if self.budget.left() < need_s:
            self.row(section, item, "-", error=f"skipped: budget ({self.budget.left():.0f} s left)")
            return
        try:
            fn()
        except Skipped as e:
            self.row(section, item, "-", error=f"skipped: {e}")
        except BudgetExceeded as e:
            self.row(section, item, "-", error=f"budget: {e}")
        except Exception as e:  # noqa: BLE001 - one failure must not stop the table
            self.row(section, item, "-", error=f"{type(e).__name__}: {str(e)[:400]}")
            traceback.print_exc()

    def ln_env(self, results: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
        env.update(LONGNET_RAW=str(self.w / "raw"), LONGNET_PREPROCESSED=str(self.w / "ln_pre"),
                   LONGNET_RESULTS=str(results), PYTHONUNBUFFERED="1")
        if self.a.smoke:
            env.update(LONGNET_COMPILE="0", LONGNET_N_PROC_DA="1", OMP_NUM_THREADS="1")
        return env

    def nn_env(self, iters: int = 1) -> dict:
        env = dict(os.environ, nnUNet_raw=str(self.w / "raw"), nnUNet_preprocessed=str(self.w / "nn_pre"),
                   nnUNet_results=str(self.w / "nn_res"), nnUNet_extTrainer=str(self.w / "nn_trainers"),
                   BENCH_EPOCHS=str(self.a.epochs), BENCH_ITERS=str(iters), PYTHONUNBUFFERED="1")
        if self.a.smoke:
            env.update(nnUNet_compile="f", nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", OMP_NUM_THREADS="1")
        return env

    def cli(self, python: str, entry: str, args: list[str], env: dict, log: str) -> float:
        """Run an entry point to completion under the budget; raise with the log's tail on failure."""
        path = self.w / "logs" / f"{log}.log"
        rc, wall = run_logged([python, "-c", RUNNER, entry, *map(str, args)], env, path, self.budget.left() - 5)
        if rc != 0:
            raise RuntimeError(f"rc {rc}: {log_tail(path)}")
        return wall

    def need_nnunet(self) -> None:
        if self.nn_missing:
            raise Skipped(f"nnU-Net not importable ({self.nn_missing})")

    # ------------------------------------------------------------------ sections
    def data(self) -> None:
        for ds in self.ds:
            def gen(ds: DS = ds) -> None:
                t = time.perf_counter()
                write_synthetic_dataset(self.w / "raw", ds.did, ds.name, ds.cases, ds.shape, ds.labels, ds.body,
                                        workers=self.np)
                self.row("data", ds.key, "cases written", ds.cases,
                         note=f"~{ds.shape}, {time.perf_counter() - t:.0f} s")
            self.section("data", ds.key, gen)
        ids = [str(d.did) for d in self.ds]

        def start_nnunet() -> None:  # in the background: overlaps longnet's preprocessing and the ceilings
            import subprocess

            (self.w / "nn_trainers").mkdir(parents=True, exist_ok=True)
            (self.w / "nn_trainers" / f"{NNUNET_TRAINER}.py").write_text(NNUNET_TRAINER_SRC)
            log = self.w / "logs" / "nnunet_plan_and_preprocess.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            self.nn_pre_t0 = time.perf_counter()
            cmd = [self.nnpy, "-c", RUNNER, NNUNET["plan"], "-d", *[str(d.did) for d in self.trained], "-c",
                   "3d_fullres", "-np", str(self.np), "-npfp", str(self.np)]
            self.nn_pre_proc = subprocess.Popen(cmd, env=self.nn_env(), stdout=open(log, "w"),
                                                stderr=subprocess.STDOUT, start_new_session=True)
        if not self.nn_missing and {"nnunet", "predict"} & set(self.a.sections):
            self.section("data", "nnU-Net preprocess", start_nnunet)

        def pre() -> None:
            wall = self.cli(self.py, LONGNET["plan"], ["-d", *ids, "-c", "3d_fullres", "-np", self.np],
                            self.ln_env(self.w / "ln_res"), "longnet_plan_and_preprocess")
            self.row("data", "+".join(d.key for d in self.ds), "longnet plan+preprocess s", round(wall, 1),
                     note="concurrent with nnU-Net's" if self.nn_pre_proc else "")
            for ds in self.ds:
                conf = json.loads((self.w / "ln_pre" / ds.folder / "nnUNetPlans.json").read_text())
                conf = conf["configurations"]["3d_fullres"]
                ak = conf["architecture"]["arch_kwargs"]
                self.row("data", ds.key, "plan", "x".join(map(str, conf["patch_size"])) + f" b{conf['batch_size']}",
                         target="128x128x128 b2" if ds.key == "brain" and not self.a.smoke else "",
                         note=f"{ak['n_stages']} stages {ak['features_per_stage']}")
        self.section("data", "preprocess", pre)

    def ceiling(self, ds: DS, compiled: bool) -> None:
        """ms/iteration of the trainer's network, loss and optimiser step on a synthetic batch on the device."""
        import torch

        from longnet.training import runtime
        from longnet.training.segmentation import nnUNetTrainer

        pre = self.w / "ln_pre" / ds.folder
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        tr = nnUNetTrainer(plans, "3d_fullres", 0, json.loads((pre / "dataset.json").read_text()), device=self.dev)
        runtime.configure_backends(tr.device, False)
        amp = runtime.resolve_amp(tr.device, "auto")
        tr.network = tr.build_network().to(tr.device)
        tr.optimizer, _ = tr.configure_optimizers()
        tr.loss = tr.build_loss()
        tr.grad_scaler = runtime.make_grad_scaler(tr.device, amp)
        conf = tr.configuration_manager
        g = torch.Generator().manual_seed(0)
        x = torch.randn(conf.batch_size, tr.num_input_channels, *conf.patch_size, generator=g).to(tr.device)
        heads = tr.label_manager.num_segmentation_heads
        ys = [torch.randint(0, heads, (conf.batch_size, 1, *[int(round(p * f)) for p, f in zip(conf.patch_size, s)]),
                            generator=g).to(tr.device) for s in tr.deep_supervision_scales]
        model = torch.compile(tr.network) if compiled else tr.network

        def step() -> float:
            tr.optimizer.zero_grad(set_to_none=True)
            with runtime.autocast(tr.device, amp):
                loss = tr.loss(model(x), ys)
            tr.backward_and_step(loss)
            return float(loss.detach())

        with self.budget:
            per, warm, _ = time_steps(step, tr.device, 1 if self.a.smoke else 3, ds.ceiling_steps)
        mode = "compiled" if compiled else "eager"
        self.res.setdefault(ds.key, {})[f"ceiling_{mode}_ms"] = per * 1000
        self.row("ceiling", ds.key, f"ceiling {mode} ms/it", round(per * 1000, 1),
                 note=f"warm-up {warm:.0f} s, b{conf.batch_size} {conf.patch_size}, amp {amp}")
        del model, tr
        if compiled:
            torch._dynamo.reset()
        if self.dev == "cuda":
            torch.cuda.empty_cache()

    def train_longnet(self, ds: DS, aug: str) -> None:
        args = [ds.did, "3d_fullres", 0, "-tr", "nnUNetTrainer", "--epochs", self.a.epochs, "--iters-per-epoch",
                ds.iters, "--val-iters", 0, "--disable-final-validation", "-device", self.dev]
        note = ""
        if self.aug_flag:
            args += ["--augmentation", aug]
        elif aug == "cpu":
            raise Skipped("longnet_train has no --augmentation option yet")
        else:
            note = "WARNING: no --augmentation option: trainer default"
            print(f"WARNING: longnet_train has no --augmentation option; {ds.key} e2e runs the trainer default")
        results = self.w / f"ln_res_{aug}"
        wall = self.cli(self.py, LONGNET["train"], args, self.ln_env(results), f"longnet_train_{ds.key}_{aug}")
        times = epoch_times(results / ds.folder / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0")
        self._e2e_row(ds, f"longnet_{aug}", times, wall, note)

    def train_nnunet(self, ds: DS) -> None:
        self.need_nnunet()
        self.wait_nnunet_preprocessing()
        wall = self.cli(self.nnpy, NNUNET["train"], [ds.did, "3d_fullres", 0, "-tr", NNUNET_TRAINER, "-device",
                                                     self.dev], self.nn_env(ds.iters), f"nnunet_train_{ds.key}")
        times = epoch_times(self.w / "nn_res" / ds.folder / f"{NNUNET_TRAINER}__nnUNetPlans__3d_fullres" / "fold_0")
        self._e2e_row(ds, "nnunet", times, wall, "")

    def _e2e_row(self, ds: DS, key: str, times: list[float], wall: float, note: str) -> None:
        if not times:
            raise RuntimeError("no epoch times found in the checkpoint or log")
        steady = times[1:] or times
        ms = sum(steady) / len(steady) / ds.iters * 1000
        self.res.setdefault(ds.key, {})[f"e2e_{key}_ms"] = ms
        self.res[ds.key][f"epoch_times_{key}"] = times
        section = {"longnet_gpu": "e2e", "longnet_cpu": "cpuaug"}.get(key, "nnunet")
        epochs = ",".join(f"{t:.1f}" for t in times)
        self.row(section, ds.key, f"{key} e2e ms/it", round(ms, 1), note=(note + " " if note else "")
                 + f"{len(times)}x{ds.iters} it, epochs {epochs} s, process {wall:.0f} s")

    def wait_nnunet_preprocessing(self) -> None:
        p = self.nn_pre_proc
        if p is None:
            raise Skipped("nnU-Net preprocessing was not started")
        if self.nn_pre_done is None:
            import subprocess

            try:
                rc = p.wait(timeout=max(1.0, self.budget.left() - 5))
            except subprocess.TimeoutExpired:
                kill_group(p)
                raise BudgetExceeded("nnU-Net preprocessing still running") from None
            log = self.w / "logs" / "nnunet_plan_and_preprocess.log"
            complete = all(len([f for f in (self.w / "nn_pre" / d.folder / "nnUNetPlans_3d_fullres").glob("*.b2nd")
                                if not f.name.endswith("_seg.b2nd")]) == d.cases for d in self.trained)
            self.nn_pre_done = 0 if complete else rc  # e.g. a failing gt copy at the very end: data are there
            self.row("nnunet", "+".join(d.key for d in self.trained), "nnU-Net plan+preprocess s",
                     round(time.perf_counter() - self.nn_pre_t0, 1), note="concurrent with longnet's + ceilings"
                     + ("" if rc == 0 or not complete else "; every case preprocessed: continuing"),
                     error="" if rc == 0 else f"rc {rc}: {log_tail(log)}")
        if self.nn_pre_done != 0:
            raise Skipped("nnU-Net preprocessing failed")

    def predict(self, ds: DS) -> None:
        inp, out = self.w / "pred_in" / ds.key, self.w / "pred_out" / ds.key
        inp.mkdir(parents=True, exist_ok=True)
        images = sorted((self.w / "raw" / ds.folder / "imagesTr").glob("*_0000.nii.gz"))[:ds.pred_cases]
        for f in images:
            if not (inp / f.name).exists():
                (inp / f.name).symlink_to(f)
        nn_model = self.w / "nn_res" / ds.folder / f"{NNUNET_TRAINER}__nnUNetPlans__3d_fullres"
        use_nn = not self.nn_missing and (nn_model / "fold_0" / "checkpoint_final.pth").is_file()
        model = nn_model if use_nn else (self.w / "ln_res_gpu" / ds.folder / "nnUNetTrainer__nnUNetPlans__3d_fullres")
        if not (model / "fold_0" / "checkpoint_final.pth").is_file():
            raise Skipped("no trained model (nnunet and e2e sections did not finish)")
        n, ln_model, note = len(images), model, ""
        if use_nn:  # does longnet take nnU-Net's checkpoint as it is? (else: a numpy-free copy, same weights)
            from longnet.errors import LongnetError
            from longnet.io.checkpoints import load_checkpoint

            try:
                load_checkpoint(model / "fold_0" / "checkpoint_final.pth")
            except LongnetError as e:
                self.row("predict", ds.key, "longnet loads nnU-Net checkpoint", False, "True", False,
                         error=str(e)[-300:])
                ln_model, note = self.w / "nn_res_plain" / ds.folder / model.name, ", numpy-free checkpoint copy"
                plain_model_copy(model, ln_model)
        wall = self.cli(self.py, LONGNET["predict"], ["-i", inp, "-o", out / "longnet", "-m", ln_model, "-f", 0,
                                                      "-device", self.dev], self.ln_env(self.w / "ln_res"),
                        f"longnet_predict_{ds.key}")
        self.res.setdefault(ds.key, {})["predict_longnet_s"] = wall / n
        self.row("predict", ds.key, "longnet s/case (TTA)", round(wall / n, 2),
                 note=f"{n} cases, wall {wall:.1f} s, weights: {'nnU-Net' if use_nn else 'longnet'}{note}")
        if not use_nn:
            raise Skipped(f"nnU-Net predict: {self.nn_missing or 'no nnU-Net model'}")
        extra = ["-npp", 1, "-nps", 1] if self.a.smoke else []
        wall = self.cli(self.nnpy, NNUNET["predict"], ["-i", inp, "-o", out / "nnunet", "-d", ds.did, "-c",
                                                       "3d_fullres", "-tr", NNUNET_TRAINER, "-f", 0, "-device",
                                                       self.dev, *extra], self.nn_env(), f"nnunet_predict_{ds.key}")
        self.res[ds.key]["predict_nnunet_s"] = wall / n
        self.row("predict", ds.key, "nnU-Net s/case (TTA)", round(wall / n, 2), note=f"{n} cases, wall {wall:.1f} s")
        agree, k = voxel_agreement(out / "longnet", out / "nnunet")
        self.res[ds.key]["agreement"] = agree
        self.row("predict", ds.key, "voxel agreement", round(agree, 6), ">= 0.999", agree >= 0.999, note=f"{k} cases")

    def plugin(self, name: str) -> None:
        import importlib

        import torch

        mod = importlib.import_module(f"{name}_gpu")
        if self.a.smoke:
            kw = {"longrep": dict(size=32, features=4, width=64, patches=16),
                  "stamp": dict(size=32, patch=8, preset="tiny", batch=2),
                  "tfm": dict(size=(16, 32, 32), base=8, mult=(1, 1), attention=False, batch=2, ode_steps=2,
                              forecasts=1)}[name]
            kw.update(device="cpu", compile=False, amp="off", steps=2, warmup=1)
        else:
            kw = dict(device="cuda", compile=self.a.plugin_compile, steps=self.a.plugin_steps, warmup=3)
            torch.backends.cudnn.benchmark = True
            enable_tf32("cuda")
        with self.budget:
            r = mod.run_check(**kw)
        self.res.setdefault("plugins", {})[name] = r
        self.row("plugins", name, "ms/it", r["ms_per_iteration"],
                 note=f"compile {r['compile']}, amp {r['amp']}, peak {r.get('peak_mem_GiB')} GiB"
                 + (f", forecast {r['forecast_s_per_subject']} s/subject" if "forecast_s_per_subject" in r else ""))
        if torch.cuda.is_available():
            torch._dynamo.reset()
            torch.cuda.empty_cache()

    def ratios(self) -> None:
        for ds in self.ds:
            r = self.res.get(ds.key, {})
            ceil = r.get("ceiling_compiled_ms") or r.get("ceiling_eager_ms")
            pairs = [("e2e/ceiling", r.get("e2e_longnet_gpu_ms"), ceil, 1.15),
                     ("longnet/nnU-Net e2e", r.get("e2e_longnet_gpu_ms"), r.get("e2e_nnunet_ms"), 0.6),
                     ("longnet cpu-aug/nnU-Net e2e", r.get("e2e_longnet_cpu_ms"), r.get("e2e_nnunet_ms"), None),
                     ("predict longnet/nnU-Net", r.get("predict_longnet_s"), r.get("predict_nnunet_s"), 0.5)]
            eager_only = "ceiling_compiled_ms" not in r
            for name, num, den, target in pairs:
                if num and den:
                    v = num / den
                    self.row("ratio", ds.key, name, round(v, 3), f"<= {target}" if target else "",
                             (v <= target) if target else "",
                             note="vs eager ceiling" if name == "e2e/ceiling" and eager_only else "")

    def run(self) -> None:
        import torch

        self.row("env", "-", "torch", torch.__version__, note=f"python {sys.version.split()[0]}, "
                 f"{os.cpu_count()} CPUs, nnU-Net: {self.nn_missing or self.nnpy}")
        if os.environ.get("GPU_BENCH_INSTALL"):
            failed = os.environ["GPU_BENCH_INSTALL"].startswith("failed")
            self.row("env", "-", "install", not failed, ok=not failed, note="" if failed else
                     os.environ["GPU_BENCH_INSTALL"], error=os.environ["GPU_BENCH_INSTALL"] if failed else "")
        try:
            from longnet.cli.train import build_parser
            from longnet.registry import get_trainer

            self.aug_flag = "--augmentation" in build_parser(get_trainer("nnUNetTrainer"))._option_string_actions
        except Exception as e:  # noqa: BLE001
            self.aug_flag = False
            self.row("env", "-", "longnet import", error=f"{type(e).__name__}: {e}")
        if not self.aug_flag:
            print("WARNING: nnUNetTrainer has no --augmentation option: the gpu run uses the trainer default, "
                  "the cpu run is skipped")
        self.data()
        brain, hippo = self.ds
        modes = [False] if self.a.smoke or self.a.no_compile else [False, True]
        for c in modes:  # brain first: GPU-bound while nnU-Net preprocesses in the background
            self.section("ceiling", brain.key, lambda c=c: self.ceiling(brain, c), 20)
        if self.nn_pre_proc is not None and not self.a.smoke:  # the launch-bound hippo ceiling wants the CPUs
            self.section("nnunet", "preprocess", self.wait_nnunet_preprocessing, 10)
        for c in modes:
            self.section("ceiling", hippo.key, lambda c=c: self.ceiling(hippo, c), 20)
        trained = self.trained
        steps: list[tuple[str, str, Callable[[], None], float]] = []
        for ds in trained:
            steps += [("e2e", ds.key, lambda ds=ds: self.train_longnet(ds, "gpu"), 30),
                      ("nnunet", ds.key, lambda ds=ds: self.train_nnunet(ds), 40)]
        steps += [("predict", ds.key, lambda ds=ds: self.predict(ds), 20) for ds in trained]
        steps += [("plugins", n, lambda n=n: self.plugin(n), 20) for n in ("longrep", "stamp", "tfm")]
        steps += [("cpuaug", ds.key, lambda ds=ds: self.train_longnet(ds, "cpu"), 30) for ds in trained]
        if self.a.smoke:  # nnU-Net's preprocessing is still running: its sections last
            steps.sort(key=lambda st: st[0] in ("nnunet", "predict"))
        for section, key, fn, need in steps:  # plugins before cpuaug: a comparison only, the first to drop
            self.section(section, key, fn, need)
        if self.nn_pre_proc is not None and self.nn_pre_proc.poll() is None:
            kill_group(self.nn_pre_proc)
        self.ratios()

    def report(self, t0: float) -> None:
        cols = ["section", "item", "metric", "value", "target", "ok", "card", "note", "error"]
        print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for r in self.rows:
            print("| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |")
        out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path.cwd()
        out.mkdir(parents=True, exist_ok=True)
        doc = {"card": self.card, "smoke": self.a.smoke, "wall_s": round(time.time() - t0, 1),
               "args": vars(self.a), "rows": self.rows, "results": self.res}
        (out / "gpu_bench.json").write_text(json.dumps(doc, indent=1, default=str))
        logs = self.w / "logs"
        if os.environ.get("OUT") and logs.is_dir():
            with tarfile.open(out / "gpu_bench_logs.tar.gz", "w:gz") as tf:
                tf.add(logs, arcname="logs")
        print(f"\nwrote {out / 'gpu_bench.json'}; total {time.time() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=float, default=480, help="wall-clock budget of the whole run, install included")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, 2 iterations, no compile")
    ap.add_argument("--install", action="store_true", help="install from bench/wheels first (GPU machine)")
    ap.add_argument("--nnunet-venv", default="/tmp/nnunet_venv", help="where --install puts nnU-Net")
    ap.add_argument("--nnunet-python", default=None,
                    help="python with nnunetv2 (default: --nnunet-venv's, else /opt/nnunet_venv/bin/python)")
    ap.add_argument("--work", default="/tmp/gpu_bench_work", help="scratch folder (emptied first)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {','.join(SECTIONS)}")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per training run (the first is not timed)")
    ap.add_argument("--brain-size", type=int, default=160)
    ap.add_argument("--brain-cases", type=int, default=8)
    ap.add_argument("--brain-iters", type=int, default=30)
    ap.add_argument("--hippo-cases", type=int, default=260)
    ap.add_argument("--hippo-iters", type=int, default=60)
    ap.add_argument("--plugin-steps", type=int, default=10)
    ap.add_argument("--plugin-compile", action="store_true",
                    help="plugin checks with torch.compile (+1-2 min of compilation; default eager)")
    ap.add_argument("--no-compile", action="store_true", help="eager ceilings only")
    args = ap.parse_args(argv)
    t0 = float(os.environ.get("GPU_BENCH_T0") or time.time())
    if args.smoke:
        args.epochs = 2
    if args.install:
        try:
            notes = install_offline(WHEELS, Path(args.nnunet_venv))
            print("\n".join(notes), flush=True)
            os.environ["GPU_BENCH_INSTALL"] = f"{'; '.join(notes)} ({time.time() - t0:.0f} s)"
        except Exception as e:  # noqa: BLE001 - still run (and report) what works
            traceback.print_exc()
            os.environ["GPU_BENCH_INSTALL"] = f"failed: {type(e).__name__}: {e}"[:400]
        os.environ["GPU_BENCH_T0"] = str(t0)
        rest = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--install"]
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *rest])
    if args.nnunet_python is None:
        cands = [Path(args.nnunet_venv) / "bin" / "python", Path("/opt/nnunet_venv/bin/python")]
        args.nnunet_python = str(next((c for c in cands if c.exists()), cands[0]))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    shutil.rmtree(args.work, ignore_errors=True)
    Path(args.work).mkdir(parents=True)
    bench = Bench(args, Budget(args.budget_s, t0))
    try:
        bench.run()
    except BaseException:  # noqa: BLE001 - the table is printed whatever happened
        traceback.print_exc()
    bench.report(t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
