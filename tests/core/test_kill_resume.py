"""Crash safety with a real SIGKILL: training and prediction are killed at a random point in a subprocess, then
resumed (`--c`, `--continue_prediction`); the result must equal an uninterrupted run and no temp file may remain.
(Preprocessing: test_plan_and_preprocess.test_kill_during_preprocessing_then_rerun.)

The kill delay is random; it is printed in every assertion message so that a failure can be replayed by setting
LONGNET_KILL_DELAY.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from raw_datasets import write_image
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from reliability_helpers import make_seg_model_folder, predict_args, set_roots, temp_leftovers
from tiny_seg_dataset import DATASET, fold_dir, make_tiny_dataset, set_env

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


def _kill_delay(max_s: float) -> float:
    fixed = os.environ.get("LONGNET_KILL_DELAY")
    return float(fixed) if fixed else random.uniform(0.0, max_s)


def _start(setup: str, run: str, go: Path, new_session: bool = False) -> subprocess.Popen:
    """A child python (one torch thread, so its float sums match this process's) that runs `setup` (imports,
    patches) at once and `run` only when the file `go` exists: its slow start overlaps the reference run.
    `new_session`: the child leads its own process group (as a batch job does), so it can be signalled whole."""
    code = (f"import sys, time, torch\ntorch.set_num_threads(1)\nsys.path.insert(0, {str(REPO)!r})\n"
            f"{setup}\n"
            f"from pathlib import Path\nwhile not Path({str(go)!r}).exists():\n    time.sleep(0.02)\n{run}\n")
    with open(go.parent / "child_stderr.txt", "w") as err:  # a file, not a pipe: a full pipe would block it
        return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=new_session)


def _children(pid: int) -> list[int]:
    """Direct child processes (Linux /proc; empty elsewhere)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.is_file() else []


def _kill_when(proc: subprocess.Popen, ready, delay: float, err_file: Path, timeout: float = 180.0,
               sig: int = signal.SIGKILL, group: bool = False) -> None:
    """Wait until `ready()` (or the child exits), sleep `delay`, then send `sig` to the child (or its whole
    process group) and wait for it to end."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"child exited ({proc.returncode}) before the kill point; see {err_file}:\n"
                                 + err_file.read_text()[-3000:])
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("kill point not reached in time")
        time.sleep(0.02)
    time.sleep(delay)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    proc.wait(60)


# -- training ---------------------------------------------------------------------------------------------------
EPOCHS = 4
TRAIN_ARGS = [DATASET, "3d_fullres", "0", "--epochs", str(EPOCHS), "--iters-per-epoch", "1", "--save-every", "1",
              "--val-iters", "1", "--no-validation-mirroring", "--disable-final-validation", "-device", "cpu"]


def _logging(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["logging"]


def test_training_killed_at_a_random_point_resumes_to_the_same_run(tmp_path, monkeypatch):
    from longnet.training.logger import TrainingLogger

    monkeypatch.setattr(TrainingLogger, "plot_progress", lambda self: None)  # matplotlib: seconds per epoch here
    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    killed_root, go = tmp_path / "killed_results", tmp_path / "go"
    fd = killed_root / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    # every epoch ends with a short sleep so the run outlives the random delay; the numbers are not affected
    proc = _start("import torch._dynamo\n"  # the first optimiser would import it (seconds): do it before 'go'
                  "from longnet.training.segmentation import nnUNetTrainer as T\n"
                  "from longnet.training.logger import TrainingLogger as L\n"
                  "L.plot_progress = lambda self: None\n"
                  "T.on_epoch_end = lambda self, epoch, metrics: time.sleep(0.5)\n"
                  f"import os\nos.environ['LONGNET_RESULTS'] = {str(killed_root)!r}\n"
                  "from longnet.cli.train import main",
                  f"sys.exit(main({TRAIN_ARGS!r}))", go)
    try:
        assert train_main(TRAIN_ARGS) == 0  # the uninterrupted reference
    except BaseException:
        proc.kill()
        raise
    go.touch()
    reference = _logging(fold_dir(tmp_path) / "checkpoint_final.pth")
    assert len(reference["train_loss"]) == EPOCHS

    monkeypatch.setenv("LONGNET_RESULTS", str(killed_root))
    delay = _kill_delay(0.9)
    _kill_when(proc, lambda: (fd / "checkpoint_latest.pth").is_file(), delay, tmp_path / "child_stderr.txt")
    info = f"(kill delay {delay:.3f} s)"
    assert proc.returncode == -signal.SIGKILL, info
    assert not (fd / "checkpoint_final.pth").exists(), f"the run finished before the kill {info}"
    saved = torch.load(fd / "checkpoint_latest.pth", map_location="cpu", weights_only=True)  # complete file
    done = saved["current_epoch"]
    assert 1 <= done < EPOCHS, info

    assert train_main(TRAIN_ARGS + ["--c"]) == 0
    final = torch.load(fd / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    resumed = final["logging"]
    assert final["current_epoch"] == EPOCHS and len(resumed["train_loss"]) == EPOCHS, info
    assert resumed["train_loss"][:done] == reference["train_loss"][:done], info  # epochs before the kill kept
    assert resumed["train_loss"] == reference["train_loss"], info  # recomputed epochs: identical (seeded batches)
    assert resumed["num_optimizer_steps"] == reference["num_optimizer_steps"], info
    assert not (fd / "checkpoint_latest.pth").exists() and temp_leftovers(fd.parent) == [], info


def test_sigterm_to_the_process_group_with_loader_workers_checkpoints_and_resumes(tmp_path, monkeypatch):
    """What Slurm and systemd do: SIGTERM to every process of the job, loader workers included. The workers leave
    quietly; the trainer writes checkpoint_latest.pth, says so in one line and exits 143; `--c`
    then finishes exactly as an uninterrupted run."""
    from longnet.training.logger import TrainingLogger

    monkeypatch.setattr(TrainingLogger, "plot_progress", lambda self: None)
    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    killed_root, go = tmp_path / "killed_results", tmp_path / "go"
    fd = killed_root / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    proc = _start("import torch._dynamo\n"
                  "from longnet.training.segmentation import nnUNetTrainer as T\n"
                  "from longnet.training.logger import TrainingLogger as L\n"
                  "L.plot_progress = lambda self: None\n"
                  "T.on_epoch_end = lambda self, epoch, metrics: time.sleep(0.5)\n"
                  f"import os\nos.environ['LONGNET_RESULTS'] = {str(killed_root)!r}\n"
                  "os.environ['LONGNET_N_PROC_DA'] = '2'\n"  # two loader worker processes (val: one)
                  "from longnet.cli.train import main",
                  f"sys.exit(main({TRAIN_ARGS!r}))", go, new_session=True)
    try:
        assert train_main(TRAIN_ARGS) == 0  # the uninterrupted reference (no workers: batches do not depend on them)
    except BaseException:
        proc.kill()
        raise
    go.touch()
    reference = _logging(fold_dir(tmp_path) / "checkpoint_final.pth")

    monkeypatch.setenv("LONGNET_RESULTS", str(killed_root))
    delay = _kill_delay(0.9)
    err_file = tmp_path / "child_stderr.txt"
    workers: list[int] = []

    def ready() -> bool:
        workers[:] = _children(proc.pid)
        return (fd / "checkpoint_latest.pth").is_file()

    _kill_when(proc, ready, delay, err_file, sig=signal.SIGTERM, group=True)
    info = f"(delay {delay:.3f} s)"
    err = err_file.read_text()
    assert proc.returncode == 143, f"{info}\n{err}"
    assert "Traceback" not in err, f"{info}\n{err}"
    lines = [line for line in err.splitlines() if line.startswith("longnet:")]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "checkpoint_latest.pth written" in lines[0], err
    if Path(f"/proc/{os.getpid()}").is_dir():
        assert len(workers) >= 2, f"no loader workers were running {info}"
        time.sleep(1.0)
        assert not any(Path(f"/proc/{w}").is_dir() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
                       for w in workers), f"loader workers outlived the trainer {info}"
    assert not (fd / "checkpoint_final.pth").exists(), f"the run finished before the signal {info}"
    saved = torch.load(fd / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert 1 <= saved["current_epoch"] < EPOCHS, info

    assert train_main(TRAIN_ARGS + ["--c"]) == 0
    resumed = _logging(fd / "checkpoint_final.pth")
    assert resumed["train_loss"] == reference["train_loss"], info
    assert resumed["num_optimizer_steps"] == reference["num_optimizer_steps"], info
    assert not (fd / "checkpoint_latest.pth").exists() and temp_leftovers(fd.parent) == [], info


# -- prediction -------------------------------------------------------------------------------------------------
N_CASES = 8


def _voxels_and_geometry(path: Path) -> tuple:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).tobytes(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def test_prediction_killed_midway_continues_to_identical_outputs(tmp_path, monkeypatch):
    roots = set_roots(monkeypatch, tmp_path)
    make_seg_model_folder(roots["res"])
    inp = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(N_CASES):
        write_image(inp / f"c{i}_0000.nii.gz", rng.normal(100, 10, (10, 12, 9)).astype(np.float32),
                    spacing=(1.0, 1.2, 1.5))
    ref_out, out, go = tmp_path / "reference", tmp_path / "out", tmp_path / "go"
    # each case takes >= 0.25 s in the child so the kill lands while cases remain
    proc = _start("from longnet.inference.predictor import Predictor as P\n"
                  "orig = P.predict_preprocessed\n"
                  "def slow(self, data, **kw):\n    time.sleep(0.25)\n    return orig(self, data, **kw)\n"
                  "P.predict_preprocessed = slow\n"
                  "from longnet.cli.predict import main",
                  f"sys.exit(main({predict_args(inp, out)!r}))", go)
    try:
        assert predict_main(predict_args(inp, ref_out)) == 0  # the uninterrupted reference
    except BaseException:
        proc.kill()
        raise
    go.touch()
    reference = {p.name: _voxels_and_geometry(p) for p in ref_out.glob("*.nii.gz")}
    assert len(reference) == N_CASES

    delay = _kill_delay(1.0)
    _kill_when(proc, lambda: any(out.glob("c*.nii.gz")), delay, tmp_path / "child_stderr.txt")
    info = f"(kill delay {delay:.3f} s)"
    assert proc.returncode == -signal.SIGKILL, info
    finished = sorted(p.name for p in out.glob("c*.nii.gz"))
    assert 1 <= len(finished) < N_CASES, f"{finished} {info}"
    for name in finished:  # what exists after the kill is complete (atomic writes)
        assert _voxels_and_geometry(out / name) == reference[name], f"{name} {info}"
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

    assert predict_main(predict_args(inp, out, "--continue_prediction")) == 0
    got = {p.name: _voxels_and_geometry(p) for p in out.glob("*.nii.gz")}
    assert got == reference, info
    assert all((out / n).stat().st_mtime_ns == t for n, t in stamps.items()), f"finished cases redone {info}"
    assert temp_leftovers(out) == [], info
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref_out.iterdir()), info
