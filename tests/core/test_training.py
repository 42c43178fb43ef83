"""Trainer core + nnUNetTrainer on a tiny preprocessed dataset (CPU, seconds per run)."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from longnet.cli.train import main as train_main
from longnet.training.segmentation import nnUNetTrainer
from tiny_seg_dataset import DATASET, fold_dir, set_env

FAST = ["--val-iters", "1", "--no-validation-mirroring", "-device", "cpu"]
CKPT_KEYS = {"network_weights", "optimizer_state", "grad_scaler_state", "logging", "current_epoch", "init_args",
             "trainer_name", "inference_allowed_mirroring_axes", "_best_ema", "rng_state"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after



def _logging(path):
    return torch.load(path, weights_only=True)["logging"]


def test_train_writes_nnunet_layout_and_safe_checkpoints(tiny):
    rc = train_main([DATASET, "3d_fullres", "0", "--epochs", "2", "--iters-per-epoch", "2"] + FAST)
    assert rc == 0
    fd = fold_dir(tiny)
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png", "validation/summary.json"):
        assert (fd / name).is_file(), name
    assert not (fd / "checkpoint_latest.pth").exists()  # removed at the end, as nnU-Net
    assert list(fd.glob("training_log_*.txt"))
    for name in ("plans.json", "dataset.json"):
        assert (fd.parent / name).is_file()
    ckpt = torch.load(fd / "checkpoint_final.pth", weights_only=True)
    assert CKPT_KEYS <= set(ckpt)
    assert ckpt["trainer_name"] == "nnUNetTrainer" and ckpt["current_epoch"] == 2
    assert ckpt["inference_allowed_mirroring_axes"] == [0, 1, 2]
    assert len(ckpt["logging"]["train_loss"]) == 2 and ckpt["logging"]["num_optimizer_steps"] == [2, 4]
    summary = json.loads((fd / "validation/summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"} and len(summary["metric_per_case"]) == 2
    log = next(fd.glob("training_log_*.txt")).read_text()
    assert "skipping 1 unlabelled training case" in log


def test_same_seed_same_losses_and_sigterm_resume_continues_identically(tiny, monkeypatch, tmp_path_factory):
    args = [DATASET, "3d_fullres", "0", "--epochs", "3", "--iters-per-epoch", "2", "--disable-final-validation"] + FAST
    assert train_main(args) == 0
    reference = _logging(fold_dir(tiny) / "checkpoint_final.pth")

    # same seed, fresh results folder: identical curve
    other = tmp_path_factory.mktemp("again")
    monkeypatch.setenv("LONGNET_RESULTS", str(other))
    assert train_main(args) == 0
    again = _logging(other / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth")
    assert again["train_loss"] == reference["train_loss"] and again["val_loss"] == reference["val_loss"]

    # SIGTERM in the middle of epoch 1 -> checkpoint_latest + exit 143; --c continues to the same curve
    third = tmp_path_factory.mktemp("killed")
    monkeypatch.setenv("LONGNET_RESULTS", str(third))
    orig = nnUNetTrainer.on_epoch_start

    def kill_at_epoch_1(self, epoch):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(nnUNetTrainer, "on_epoch_start", kill_at_epoch_1)
    assert train_main(args) == 143
    fd = third / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    latest = torch.load(fd / "checkpoint_latest.pth", weights_only=True)
    assert latest["current_epoch"] == 1 and latest["_resume_iteration"] == 1
    monkeypatch.setattr(nnUNetTrainer, "on_epoch_start", orig)
    assert train_main(args + ["--c"]) == 0
    resumed = _logging(fd / "checkpoint_final.pth")
    assert resumed["train_loss"] == reference["train_loss"]
    assert resumed["num_optimizer_steps"] == [2, 4, 6]
    assert not (fd / "checkpoint_latest.pth").exists()

    # --c on a finished run: nothing to do
    assert train_main(args + ["--c"]) == 0
    assert _logging(fd / "checkpoint_final.pth")["train_loss"] == reference["train_loss"]


def test_resume_from_latest_after_hard_stop(tiny, monkeypatch):
    """A crash after epoch 1 (latest saved every epoch) resumes at epoch 2 and keeps the loss curve."""
    args = [DATASET, "3d_fullres", "0", "--epochs", "3", "--iters-per-epoch", "1", "--save-every", "1",
            "--disable-final-validation"] + FAST

    def crash(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(nnUNetTrainer, "on_epoch_start", crash)
    assert train_main(args) == 130
    fd = fold_dir(tiny)
    before = _logging(fd / "checkpoint_latest.pth")
    assert len(before["train_loss"]) == 2
    monkeypatch.undo()
    set_env(monkeypatch, tiny)
    assert train_main(args + ["--c"]) == 0
    after = _logging(fd / "checkpoint_final.pth")
    assert after["train_loss"][:2] == before["train_loss"] and len(after["train_loss"]) == 3


def test_compile_failure_falls_back_to_eager_once(tiny, monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self._orig_mod = net

        def forward(self, x):
            raise RuntimeError("Failed to find C compiler")

    monkeypatch.setenv("LONGNET_COMPILE", "1")
    monkeypatch.setattr(torch, "compile", lambda net, **kw: Broken(net))
    with pytest.warns(UserWarning, match="torch.compile failed"):
        rc = train_main([DATASET, "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1",
                         "--disable-final-validation"] + FAST)
    assert rc == 0


def test_errors_are_clear(tiny, capsys):
    assert train_main([DATASET, "3d_fullres", "7", "--epochs", "1"] + FAST) == 1
    assert "only 3 split(s)" in capsys.readouterr().err
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "NoSuchTrainer"]) == 1
    err = capsys.readouterr().err
    assert "unknown trainer 'NoSuchTrainer'" in err and "nnUNetTrainer" in err
    assert train_main([DATASET, "2d", "0"] + FAST) == 1
    assert "configuration '2d' not in plans" in capsys.readouterr().err
    assert not fold_dir(tiny).exists()


def test_unmet_requirements_refused_before_any_output(tiny, monkeypatch, capsys):
    from types import SimpleNamespace

    from longnet import registry
    from longnet.training.requirements import Requirements

    class PairTrainer(nnUNetTrainer):
        """Needs two visits per subject."""
        requirements = Requirements(min_visits_per_subject=2, required_columns=("score",))

    real = registry._entry_points
    fake = SimpleNamespace(name="PairTrainer", value="x:PairTrainer", group=registry.TRAINERS,
                           dist=SimpleNamespace(name="pairs", version="0"), load=lambda: PairTrainer)
    monkeypatch.setattr(registry, "_entry_points", lambda g: real(g) + ([fake] if g == registry.TRAINERS else []))
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "PairTrainer"] + FAST) == 1
    err = capsys.readouterr().err
    assert "requirements of trainer PairTrainer" in err and ">= 2 visits" in err and "'score'" in err
    assert not fold_dir(tiny, "PairTrainer").parent.exists()


def test_ddp_two_cpu_processes_same_steps_per_epoch(tiny, monkeypatch):
    """gloo DDP with 2 processes: the global batch of 2 is split 1+1, optimiser steps per epoch unchanged."""
    seen = tiny / "batches.txt"
    orig = nnUNetTrainer.training_step

    def recording_step(self, batch):  # CPU processes are forked, so this patch reaches them
        with open(seen, "a") as f:
            f.write(f"{self.dist.rank} {self.dist.world_size} {batch['data'].shape[0]} {','.join(batch['keys'])}\n")
        return orig(self, batch)

    monkeypatch.setattr(nnUNetTrainer, "training_step", recording_step)
    rc = train_main([DATASET, "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "2", "--num-gpus", "2",
                     "--disable-final-validation"] + FAST)
    assert rc == 0
    ckpt = torch.load(fold_dir(tiny) / "checkpoint_final.pth", weights_only=True)
    assert ckpt["logging"]["num_optimizer_steps"] == [2]  # same as one process with the whole batch
    assert len(ckpt["logging"]["train_loss"]) == 1
    rows = [line.split() for line in seen.read_text().splitlines()]
    assert sorted(r[0] for r in rows) == ["0", "0", "1", "1"]
    assert all(r[1] == "2" and r[2] == "1" for r in rows)  # world 2, one sample per rank


def test_random_init_baseline_in_its_own_model_folder(tiny, capsys):
    """`--random-init --output-name NAME`: the seeded initial network as checkpoint_final.pth in RESULTS/Dataset/NAME
    (with model.json naming trainer, plans and configuration), next to the trained run, and predictable with -m."""
    from longnet.cli.predict import _parse
    from longnet.io.model_folder import ModelFolder

    args = [DATASET, "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1", "--seed", "7"] + FAST
    assert train_main(args + ["--random-init", "--output-name", "nnUNet_random_init"]) == 0
    assert train_main(args) == 0  # the trained run keeps its own folder
    folder = tiny / "results" / DATASET / "nnUNet_random_init"
    assert json.loads((folder / "model.json").read_text()) == {"trainer": "nnUNetTrainer", "plans": "nnUNetPlans",
                                                               "configuration": "3d_fullres"}
    model = ModelFolder(folder)
    assert (model.trainer_name, model.configuration()) == ("nnUNetTrainer", "3d_fullres")
    random = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    trained = torch.load(fold_dir(tiny) / "checkpoint_final.pth", weights_only=True)
    assert random["current_epoch"] == 0 and trained["current_epoch"] == 1
    fresh = nnUNetTrainer(random["init_args"]["plans"], "3d_fullres", 0, random["init_args"]["dataset_json"], "cpu",
                          {"seed": 7})
    fresh.initialize()
    assert all(torch.equal(v, random["network_weights"][k]) for k, v in fresh.network.state_dict().items())
    assert not torch.equal(trained["network_weights"]["encoder.stages.0.0.convs.0.conv.weight"],
                           random["network_weights"]["encoder.stages.0.0.convs.0.conv.weight"])
    _, cls = _parse(["-i", str(tiny), "-o", str(tiny / "pred"), "-m", str(folder)])  # -m finds its trainer
    assert cls is nnUNetTrainer
    assert train_main(args + ["--random-init", "--c"]) == 1
    assert "cannot be combined with --c" in capsys.readouterr().err
