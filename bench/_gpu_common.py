"""Helpers shared by the GPU bench scripts (longrep_gpu, stamp_gpu, tfm_gpu, gpu_bench): the timed step loop,
device facts, synthetic raw datasets, the offline install on a GPU machine without internet, subprocesses under a
wall-clock budget, and the nnU-Net glue (custom short trainer, epoch times from checkpoints)."""
from __future__ import annotations

import argparse

import os
import re
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "bench" / "wheels" / "wheels.tar.xz"
# `python -c RUNNER module:function args...`: a console script without its bin/ wrapper (works in any venv).
RUNNER = ("import importlib, sys; m, f = sys.argv[1].split(':'); sys.argv = [f] + sys.argv[2:]; "
          "r = getattr(importlib.import_module(m), f)(); sys.exit(r if isinstance(r, int) else 0)")
LONGNET = {"plan": "longnet.cli.plan_and_preprocess:main_plan_and_preprocess", "train": "longnet.cli.train:main",
           "predict": "longnet.cli.predict:main"}
NNUNET = {"plan": "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_and_preprocess_entry",
          "train": "nnunetv2.run.run_training:run_training_entry",
          "predict": "nnunetv2.inference.predict_from_raw_data:predict_entry_point"}
NNUNET_TRAINER = "nnUNetTrainer_bench"
NNUNET_TRAINER_SRC = '''import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_bench(nnUNetTrainer):
    """nnU-Net's default recipe, shortened for timing: BENCH_EPOCHS x BENCH_ITERS, no per-epoch validation (like
    longnet_train --val-iters 0: epoch times are then training loops only on both sides), no final validation."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # nnU-Net records its init args by these names
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("BENCH_EPOCHS", "3"))
        self.num_iterations_per_epoch = int(os.environ.get("BENCH_ITERS", "25"))
        self.num_val_iterations_per_epoch = 0

    def on_validation_epoch_end(self, val_outputs):
        if val_outputs:
            return super().on_validation_epoch_end(val_outputs)
        for key, value in (("mean_fg_dice", 0.0), ("dice_per_class_or_region", [0.0]), ("val_losses", 0.0)):
            self.logger.log(key, value, self.current_epoch)  # what on_epoch_end prints and checkpoints

    def perform_actual_validation(self, save_probabilities: bool = False):
        pass
'''


# ------------------------------------------------------------------------------------------ device and timing
def device_name(dev) -> str:
    import torch

    dev = torch.device(dev)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def peak_mem_gib(dev) -> float | None:
    import torch

    dev = torch.device(dev)
    return round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2) if dev.type == "cuda" else None


def add_timing_arguments(ap: argparse.ArgumentParser) -> None:
    """--steps/--warmup and the eager/compiled selection shared by the plugin check scripts."""
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--no-eager", action="store_true", help="compiled only")


def compile_modes(args: argparse.Namespace) -> list[bool]:
    """Which runs `add_timing_arguments` asked for: compiled and eager by default."""
    return [False] if args.no_compile else ([True] if args.no_eager else [True, False])


def enable_tf32(device: str) -> None:
    """TF32 matmul/conv on CUDA (what the trainers get by default on Ampere+)."""
    import torch

    if str(device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def time_steps(step: Callable[[], float], dev, warmup: int, steps: int) -> tuple[float, float, float]:
    """`warmup` then `steps` calls of step() (compilation happens in the warm-up): seconds per step, warm-up
    seconds, last loss. Synchronises around each phase so queued GPU work is counted; resets peak memory."""
    import torch

    dev = torch.device(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    last = float("nan")
    t = time.perf_counter()
    for _ in range(warmup):
        last = step()
    sync()
    t_warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        last = step()
    sync()
    return (time.perf_counter() - t) / max(1, steps), t_warm, last


# ------------------------------------------------------------------------------------------ budget
class BudgetExceeded(Exception):
    """The wall-clock budget of the bench ran out inside a section."""


class Budget:
    """Deadline for the whole bench; `alarm()` interrupts in-process work (SIGALRM) when it passes."""

    def __init__(self, seconds: float, t0: float | None = None):
        self.deadline = (t0 or time.time()) + seconds

    def left(self) -> float:
        return self.deadline - time.time()

    def __enter__(self) -> "Budget":
        def _raise(signum, frame):
            raise BudgetExceeded("wall-clock budget exhausted")

        signal.signal(signal.SIGALRM, _raise)
        signal.alarm(max(1, int(self.left())))
        return self

    def __exit__(self, *exc) -> None:
        signal.alarm(0)


def run_logged(cmd: list[str], env: dict, log: Path, timeout: float, cwd: Path | None = None) -> tuple[int, float]:
    """Run cmd (own process group, output to `log`); kill the whole group at `timeout` (budget). (rc, wall s)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise BudgetExceeded(f"killed after {timeout:.0f} s (budget): {' '.join(cmd[3:6])}") from None
    return rc, time.perf_counter() - t0


def kill_group(proc: subprocess.Popen) -> None:
    """End a process we started and its children (data-loading workers), by its group id."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def log_tail(log: Path, n: int = 6) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-600:]


# ------------------------------------------------------------------------------------------ offline install
PIP = ["-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir", "--disable-pip-version-check"]


def install_offline(archive: Path, venv: Path) -> list[str]:
    """On the GPU machine: unpack `archive` (bench/gpu_prepare.sh), pip-install its longnet/ wheels and this repo
    (editable, for the entry points the plugin registry reads) into the running python, nnunet/ into `venv`."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_wheels_"))
    with tarfile.open(archive) as tf:
        tf.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    wheels = sorted(tmp.glob("longnet/*.whl"))
    subprocess.run([sys.executable, *PIP, *map(str, wheels)], check=True)
    subprocess.run([sys.executable, *PIP, "--no-build-isolation", "-e", str(REPO)], check=True)
    notes = [f"installed {len(wheels)} wheels + longnet (editable) into {sys.executable}"]
    return notes + make_nnunet_venv(venv, sorted(tmp.glob("nnunet/*.whl")))


def make_nnunet_venv(venv: Path, wheels: list[Path]) -> list[str]:
    """A --system-site-packages venv for nnU-Net plus a .pth adding this python's site dirs: a venv made from a
    venv python (the device's python3 is /opt/torch/.venv's) would otherwise see only the base interpreter's
    packages, i.e. no torch. nnU-Net's own wheels go into the venv (pip is this python's, seen via the .pth)."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                       check=True)
    vpy = str(venv / "bin" / "python")
    site_dir = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                              capture_output=True, text=True).stdout.strip()
    parents = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(site_dir, "_bench_parent_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")
    if subprocess.run([vpy, *PIP, "--ignore-installed", *map(str, wheels)]).returncode != 0:  # no pip there: from here
        subprocess.run([sys.executable, *PIP, "--target", site_dir, *map(str, wheels)], check=True)
    return [f"installed {', '.join(w.name.split('-')[0] for w in wheels)} into {venv}"]


def nnunet_available(python: str | None) -> str | None:
    """None if `python` can import nnunetv2, else why not."""
    if not python or not Path(python).exists():
        return f"no nnU-Net python ({python})"
    r = subprocess.run([python, "-c", "import nnunetv2"], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import nnunetv2 failed"])[-1]


# ------------------------------------------------------------------------------------------ synthetic data
def write_synthetic_dataset(raw_root: Path, dataset_id: int, name: str, n_cases: int, shape: tuple[int, int, int],
                            n_labels: int, body: bool, seed: int = 0, workers: int = 1) -> str:
    """Raw dataset (nnU-Net layout, read by both tools): smooth random 'tissue', an ellipsoid split into
    `n_labels` slabs brighter than the tissue, noise; shapes jittered ±10% per case; `body` zeroes everything
    outside a head-like ellipsoid (so crop-to-nonzero matters). Returns the DatasetXXX_Name folder name."""
    import json
    from concurrent.futures import ProcessPoolExecutor

    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    jobs = [(folder, f"{name.lower()}_{i:03d}", shape, n_labels, body, seed * 100003 + i) for i in range(n_cases)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(_write_case, jobs))
    else:
        for job in jobs:
            _write_case(job)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, **{f"part{k}": k for k in range(1, n_labels + 1)}},
        "numTraining": n_cases, "file_ending": ".nii.gz"}, indent=2))
    return folder.name


def _write_case(job: tuple) -> None:
    import SimpleITK as sitk
    from scipy.ndimage import zoom

    folder, case, shape, n_labels, body, seed = job
    rng = np.random.default_rng(seed)
    shp = tuple(max(8, int(round(s * f))) for s, f in zip(shape, rng.uniform(0.9, 1.1, 3)))
    coarse = rng.normal(size=(6, 6, 6)).astype(np.float32)
    tissue = zoom(coarse, [s / 6 for s in shp], order=1)[tuple(slice(0, s) for s in shp)]
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shp], indexing="ij", sparse=True)
    centre = rng.uniform(-0.2, 0.2, 3)
    radii = rng.uniform(0.25, 0.4, 3) if body else rng.uniform(0.35, 0.5, 3)
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1
    cut = np.linspace(centre[1] - radii[1], centre[1] + radii[1], n_labels + 1)[1:-1]
    part = np.searchsorted(cut, np.broadcast_to(grid[1], shp)) + 1
    seg = np.where(inside, part, 0).astype(np.uint8)
    img = 100 + 15 * tissue + 30 * seg + rng.normal(0, 5, shp).astype(np.float32)
    if body:
        img[sum((g / 0.95) ** 2 for g in grid) >= 1] = 0
    for arr, path in ((img.astype(np.float32), folder / "imagesTr" / f"{case}_0000.nii.gz"),
                      (seg, folder / "labelsTr" / f"{case}.nii.gz")):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(im, str(path), True)


# ------------------------------------------------------------------------------------------ results
def epoch_times(fold_dir: Path) -> list[float]:
    """Per-epoch seconds of a finished run: longnet's `logging.epoch_time`, nnU-Net's end-start timestamps
    (checkpoint_final.pth); else from the text log ('epoch N: ..., X s' / 'Epoch time: X s')."""
    import torch

    ck = fold_dir / "checkpoint_final.pth"
    if ck.is_file():
        log = torch.load(ck, map_location="cpu", weights_only=False).get("logging") or {}
        if log.get("epoch_time"):
            return [float(x) for x in log["epoch_time"] if x is not None]
        if log.get("epoch_end_timestamps"):
            return [float(e) - float(s) for s, e in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]
    out = []
    for txt in sorted(fold_dir.glob("training_log_*.txt")):
        for line in txt.read_text(errors="replace").splitlines():
            m = re.search(r"Epoch time: ([\d.]+) s", line) or re.search(r": epoch \d+: .*, ([\d.]+) s$", line)
            if m:
                out.append(float(m.group(1)))
    return out


def plain_model_copy(src: Path, dst: Path) -> None:
    """Copy a model folder with numpy scalars/arrays in its checkpoints turned into Python numbers/tensors (what
    longnet's weights_only loader accepts); the weights themselves are unchanged."""
    import shutil

    import torch

    from longnet.io.checkpoints import to_plain

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    for ck in src.glob("fold_*/checkpoint_final.pth"):
        (dst / ck.parent.name).mkdir(exist_ok=True)
        torch.save(to_plain(torch.load(ck, map_location="cpu", weights_only=False)), dst / ck.parent.name / ck.name)


def voxel_agreement(dir_a: Path, dir_b: Path) -> tuple[float, int]:
    """Fraction of equal voxels over all cases present in both folders (label maps), and the case count."""
    import SimpleITK as sitk

    same = total = n = 0
    for fa in sorted(dir_a.glob("*.nii.gz")):
        fb = dir_b / fa.name
        if not fb.is_file():
            continue
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in (fa, fb))
        if a.shape != b.shape:
            raise ValueError(f"{fa.name}: shapes differ {a.shape} vs {b.shape}")
        same += int((a == b).sum())
        total += a.size
        n += 1
    if not n:
        raise ValueError(f"no common predictions in {dir_a} and {dir_b}")
    return same / total, n
