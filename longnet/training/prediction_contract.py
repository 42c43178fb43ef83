"""The prediction half of the trainer contract: what `longnet_predict` calls on a trainer class.

A trainer declares its output task (`prediction_task`, one of the registered tasks of `longnet.tasks`), may add
options to `longnet_predict`, rebuilds itself from a checkpoint (`from_checkpoint`: `load_checkpoint_extra`, then
`build_inference_network`, then the weights) and predicts a folder of raw cases (`run_prediction`). The command
line resolves the model folder, the trainer class and the folds, and calls `run_prediction`; it knows no plugin.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
import torch.nn as nn

from longnet.errors import LongnetError

if TYPE_CHECKING:
    from longnet.io.model_folder import ModelFolder


class PredictionContract:
    """Mixed into `Trainer`; every method has a default, so a pretraining-only trainer overrides nothing."""

    # segmentation | forecast | embedding | classification | longitudinal_segmentation | none | a plugin's task
    prediction_task: ClassVar[str] = "none"

    @classmethod
    def add_prediction_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Options of `longnet_predict -tr THIS` (their values arrive in `args` of `run_prediction`)."""

    def build_inference_network(self) -> nn.Module:
        """The module that predicts (default: `build_network()`; segmentation drops deep supervision)."""
        return self.build_network()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu"):
        """This trainer rebuilt from a checkpoint's init_args with its weights loaded (eval mode, no data).

        `load_checkpoint_extra` runs before the network is built, so a network whose shape depends on saved
        state (e.g. an encoder specification) is rebuilt without the files it was first made from."""
        from longnet.inference.predictor import load_weights_into
        from longnet.io.checkpoints import load_checkpoint, strip_prefixes, trainer_from_init_args

        ckpt = load_checkpoint(path, map_location="cpu")
        ia = ckpt.get("init_args")
        if not isinstance(ia, dict) or "plans" not in ia:
            raise LongnetError("checkpoint has no init_args (not written by a longnet trainer)", path)
        trainer = trainer_from_init_args(cls, ia, device)
        trainer.load_checkpoint_extra(ckpt.get("extra") or {})
        net = trainer.build_inference_network()
        load_weights_into(net, strip_prefixes(ckpt["network_weights"]), path)
        trainer.network = net.to(trainer.device).eval()
        return trainer

    @classmethod
    def run_prediction(cls, model: "ModelFolder", folds: Sequence[str] | None, input_folder: Path,
                       output_folder: Path, args: argparse.Namespace, device: torch.device) -> None:
        """Predict every case of `input_folder` into `output_folder` (folds None: every trained fold)."""
        raise LongnetError(f"{cls.__name__} only pretrains: its checkpoint initialises another trainer (see its "
                           "--help), it predicts nothing")
