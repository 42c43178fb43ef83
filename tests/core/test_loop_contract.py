"""The loop contract of `Trainer`: `self.log` with any keys per step, per-step schedulers, and the final validation
that the base runs on rank 0 only (and not at all when disabled)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from longnet.training.trainer import Trainer
from tiny_seg_dataset import tiny_plans


class ToyTrainer(Trainer):
    """y = w·x on random batches; logs `even` on even steps, `odd` on odd ones."""

    num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch = 2, 4, 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.final_validation_calls = 0
        self.step_lrs: list[float] = []

    def check_requirements(self) -> None:  # no dataset behind this trainer
        pass

    def build_network(self) -> nn.Module:
        return nn.Linear(3, 1)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.network.parameters(), lr=1.0)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)

    def train_loader(self):
        g = torch.Generator().manual_seed(0)
        return ({"x": torch.randn(4, 3, generator=g)} for _ in itertools.count())

    def training_step(self, batch: dict) -> dict:
        self.step_lrs.append(self.optimizer.param_groups[0]["lr"])
        loss = self.network(batch["x"]).pow(2).mean()
        self.log("even" if self.num_optimizer_steps % 2 == 0 else "odd", torch.tensor(float(self.num_optimizer_steps)))
        return {"loss": loss}

    def final_validation(self) -> None:
        self.final_validation_calls += 1


def _trainer(tmp_path, interval: str, options: dict | None = None) -> ToyTrainer:
    cls = type("StepToy" if interval == "step" else "EpochToy", (ToyTrainer,), {"lr_scheduler_interval": interval})
    t = cls(tiny_plans(), "3d_fullres", 0, {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}},
            "cpu", {"disable_checkpointing": True, **(options or {})})
    t.setup(None, tmp_path / "out", [], [], verbose=False)
    return t


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_log_any_keys_and_scheduler_interval(tmp_path, interval):
    t = _trainer(tmp_path, interval)
    t.run_training()
    log = t.logger.values
    # steps 0..7: epoch 0 logs even = mean(0, 2), odd = mean(1, 3); epoch 1 even = mean(4, 6), odd = mean(5, 7)
    assert log["train_even"] == [1.0, 5.0] and log["train_odd"] == [2.0, 6.0]
    assert len(log["train_loss"]) == 2
    expected = [0.5 ** s for s in range(8)] if interval == "step" else [1.0] * 4 + [0.5] * 4
    assert t.step_lrs == pytest.approx(expected)
    assert t.final_validation_calls == 1


def test_final_validation_skipped_when_disabled(tmp_path):
    t = _trainer(tmp_path, "epoch", {"disable_final_validation": True})
    t.run_training()
    assert t.final_validation_calls == 0


class StreamsToy(ToyTrainer):
    """Two named streams taken at different rates: `a` every step, `b` every third step."""

    num_epochs, num_iterations_per_epoch, save_every = 3, 4, 1

    def __init__(self, *args, stop_after_epoch: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, float]] = []
        self.stop_after_epoch = stop_after_epoch

    def train_loader(self):
        def draw(rng):
            return {"x": torch.tensor(float(rng.random()))}

        a = self.make_batch_iterator(draw, "a", num_workers=0)
        b = self.make_batch_iterator(draw, "b", num_workers=0)

        def interleaved():
            step = self.num_optimizer_steps
            while True:
                batch = {"a": next(a)["x"]}
                if step % 3 == 0:
                    batch["b"] = next(b)["x"]
                step += 1
                yield batch
        return interleaved()

    def training_step(self, batch: dict) -> dict:
        self.seen += [(k, round(float(v), 8)) for k, v in sorted(batch.items())]
        return {"loss": self.network.weight.sum() * 0.0 + self.network(torch.ones(1, 3)).pow(2).mean()}

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if epoch == self.stop_after_epoch:
            self._stop_requested = True  # as a SIGTERM would: checkpoint_latest.pth, then stop


def test_named_streams_resume_where_they_stopped(tmp_path):
    from longnet.training.trainer import TrainingInterrupted

    def make(folder, **kw):
        t = StreamsToy(tiny_plans(), "3d_fullres", 0, {"channel_names": {"0": "x"}, "labels": {"background": 0,
                       "a": 1}}, "cpu", {}, **kw)
        t.setup(None, folder, [], [], verbose=False)
        return t

    whole = make(tmp_path / "whole")
    whole.run_training()
    first = make(tmp_path / "split", stop_after_epoch=0)
    with pytest.raises(TrainingInterrupted):
        first.run_training()
    second = make(tmp_path / "split")
    second.run_training(resume=True)
    assert first.seen + second.seen == whole.seen
    assert sum(1 for k, _ in whole.seen if k == "b") == 4  # steps 0, 3, 6, 9 of 12
    ckpt = torch.load(tmp_path / "whole" / "checkpoint_final.pth", weights_only=True)
    assert ckpt["stream_positions"] == {"a": 12, "b": 4}


class StatsToy(ToyTrainer):
    """Keeps a statistic of the training data in its checkpoints (as a normalising trainer would)."""

    num_epochs = 1

    def train_loader(self):
        self.stat = 5.0
        return super().train_loader()

    def checkpoint_extra(self) -> dict:
        return {"stat": getattr(self, "stat", None)}

    def load_checkpoint_extra(self, extra: dict) -> None:
        self.stat = extra.get("stat")

    def final_validation(self) -> None:
        self.validated_with = getattr(self, "stat", None)


def test_validation_only_restores_the_checkpoint_extra(tmp_path):
    def make():
        t = StatsToy(tiny_plans(), "3d_fullres", 0, {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1}},
                     "cpu", {})
        t.setup(None, tmp_path / "out", [], [], verbose=False)
        return t

    make().run_training()
    again = make()
    again.run_validation_only()  # longnet_train --val
    assert again.validated_with == 5.0


def test_an_option_that_clashes_with_longnet_train_is_one_clear_error():
    from dataclasses import dataclass

    from longnet.cli.train import build_parser
    from longnet.errors import LongnetError
    from longnet.training.options import option

    @dataclass(frozen=True)
    class Clashing:
        seed: int = option(3, "my own seed")

    cls = type("ClashToy", (ToyTrainer,), {"options_class": Clashing})
    with pytest.raises(LongnetError, match="ClashToy declares an option that clashes .*--seed"):
        build_parser(cls)
