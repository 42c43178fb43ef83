"""`longnet_train` under `torchrun --nnodes 2`: two one-process "nodes" on 127.0.0.1 (gloo, CPU) train like one
process holding the global batch.

Run as a script (by torchrun) this file trains through `longnet.cli.train.main` with two test-only patches:
every rank cuts its share out of the batches a single process would draw (so the data, not only its
distribution, is the same as without DDP) and each rank appends its per-step losses to $STEP_LOSSES.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longnet.training.distributed import DistContext, free_port, local_rank_from_env, split_batch
from longnet.training.segmentation import nnUNetTrainer

ARGS = ["3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "0",
        "--disable-final-validation", "--augmentation", "cpu", "-device", "cpu"]
_single_process_loader = nnUNetTrainer.train_loader
_plain_step = nnUNetTrainer.training_step


def _take(value, offset: int, n: int):
    if isinstance(value, list) and value and torch.is_tensor(value[0]):  # deep-supervision targets
        return [v[offset:offset + n] for v in value]
    if torch.is_tensor(value) or isinstance(value, list):  # data, target, case keys
        return value[offset:offset + n]
    return value


def global_batch_loader(self):
    """The batches of one process (world size 1, rank 0), of which this rank keeps its part."""
    real = self.dist
    self.dist = DistContext()
    try:
        batches = _single_process_loader(self)
    finally:
        self.dist = real
    n, offset = split_batch(self.configuration_manager.batch_size, real.world_size, real.rank)
    return ({k: _take(v, offset, n) for k, v in b.items()} for b in batches)


def recording_step(self, batch):
    out = _plain_step(self, batch)
    with open(os.environ["STEP_LOSSES"], "a") as f:
        f.write(json.dumps({"rank": self.dist.rank, "world": self.dist.world_size, "samples": len(batch["keys"]),
                            "loss": float(out["loss"].detach())}) + "\n")
    return out


def _patch(setattr_) -> None:
    setattr_(nnUNetTrainer, "train_loader", global_batch_loader)
    setattr_(nnUNetTrainer, "training_step", recording_step)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from tiny_seg_dataset import make_tiny_dataset, set_env

    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    return tmp_path


def _steps(path: Path, world: int) -> list[float]:
    """Per-step loss of the global batch: the mean of the ranks' losses (each holds an equal share)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted({r["rank"] for r in rows}) == list(range(world)) and all(r["world"] == world for r in rows)
    assert all(r["samples"] == 2 // world for r in rows)
    per_rank = [[r["loss"] for r in rows if r["rank"] == k] for k in range(world)]
    return [float(np.mean(step)) for step in zip(*per_rank)]


def test_local_rank_comes_from_the_node_not_the_global_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_rank_from_env() == 1
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_rank_from_env() == 0


def test_two_nodes_under_torchrun_train_like_one_process(tiny, monkeypatch):
    from longnet.cli.train import main as train_main
    from tiny_seg_dataset import DATASET, fold_dir

    env = {**os.environ, "OMP_NUM_THREADS": "1", "LONGNET_RESULTS": str(tiny / "results_torchrun"),
           "STEP_LOSSES": str(tiny / "torchrun_steps.jsonl"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port",
                               str(port), __file__, DATASET, *ARGS], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for node in (0, 1)]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    for node, (p, out) in enumerate(zip(nodes, outputs)):
        assert p.returncode == 0, f"node {node}:\n{out[-3000:]}"
    assert "world size 2" in outputs[0] and "world size 2" not in outputs[1]  # only global rank 0 reports

    monkeypatch.setenv("STEP_LOSSES", str(tiny / "single_steps.jsonl"))
    _patch(monkeypatch.setattr)
    assert train_main([DATASET, *ARGS]) == 0

    two_nodes, single = _steps(tiny / "torchrun_steps.jsonl", 2), _steps(tiny / "single_steps.jsonl", 1)
    print("per-step loss, two nodes:", two_nodes, "one process:", single)
    assert len(single) == 2 and two_nodes == pytest.approx(single, rel=1e-4, abs=1e-6)
    multi = tiny / "results_torchrun" / fold_dir(tiny).relative_to(tiny / "results")
    ckpt = torch.load(multi / "checkpoint_final.pth", weights_only=True)
    reference = torch.load(fold_dir(tiny) / "checkpoint_final.pth", weights_only=True)
    assert ckpt["logging"]["train_loss"] == pytest.approx(reference["logging"]["train_loss"], rel=1e-4)
    assert ckpt["logging"]["num_optimizer_steps"] == [2]
    assert len(list(multi.glob("training_log_*.txt"))) == 1  # written by global rank 0 alone


if __name__ == "__main__":  # one torchrun worker
    from longnet.cli.train import main

    _patch(setattr)
    sys.exit(main(sys.argv[1:]))
