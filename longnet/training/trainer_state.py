"""Checkpoint state of a Trainer: what is saved, how a run resumes, and the best-metric EMA.

Kept apart from the loop so the saved keys are easy to audit: everything is plain data (weights_only-safe).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import longnet
from longnet.errors import LongnetError
from longnet.io.checkpoints import (get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
                                         strip_prefixes, to_plain, unwrap)

# what later steps read (predict, --pretrained-weights, --val): these leave out `resume_only_prefixes` tensors and the
# optimiser state when a trainer declares such tensors; checkpoint_latest.pth keeps everything for --c
SLIM_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")


class TrainerStateMixin:
    """Saving/loading of checkpoints and the EMA-based best-checkpoint rule (mixed into Trainer)."""

    # network tensors that only continuing this training needs (e.g. the projection heads of a self-supervised
    # loss, often larger than the network that is kept): left out of SLIM_CHECKPOINTS with the optimiser state
    resume_only_prefixes: tuple[str, ...] = ()

    def checkpoint_state(self, next_epoch: int, resume_iteration: int = 0, partial: list | None = None,
                         slim: bool = False) -> dict:
        """Everything needed to resume bit-identically; `next_epoch` is the first epoch not yet finished.
        `slim` (only with `resume_only_prefixes`): the network without those tensors, no optimiser/scaler state."""
        axes = self.inference_allowed_mirroring_axes
        weights = strip_prefixes(unwrap(self.network).state_dict())
        slim = slim and bool(self.resume_only_prefixes)
        if slim:
            weights = {k: v for k, v in weights.items() if not k.startswith(tuple(self.resume_only_prefixes))}
        state = {
            "network_weights": weights,
            "optimizer_state": self.optimizer.state_dict() if self.optimizer is not None and not slim else None,
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None and not slim else None,
            "scheduler_state": to_plain(self.lr_scheduler.state_dict()) if self.lr_scheduler is not None else None,
            "logging": self.logger.state(),
            "current_epoch": int(next_epoch),
            "init_args": self.init_args,
            "trainer_options": to_plain(dataclasses.asdict(self.opts)) if self.opts is not None else None,
            "trainer_name": self.trainer_name,
            "inference_allowed_mirroring_axes": list(axes) if axes is not None else None,
            "_best_ema": self._best_ema,
            "_ema": self._ema,
            "num_optimizer_steps": int(self.num_optimizer_steps),
            "rng_state": get_rng_state(),
            "_resume_iteration": int(resume_iteration),
            "stream_positions": {k: int(v) for k, v in self._stream_positions.items()},
            "_partial_train_outputs": to_plain(partial or []),
            "extra": to_plain(self.checkpoint_extra()),
            "longnet_version": getattr(longnet, "__version__", "unknown"),
        }
        if slim:
            state["resumable"] = False  # load_checkpoint restores it with fresh heads and optimiser state
        return state

    def save_checkpoint(self, filename: str, next_epoch: int, resume_iteration: int = 0,
                        partial: list | None = None) -> None:
        """Rank 0 writes `output_folder/filename` atomically; other ranks wait."""
        if self.output_folder is not None and self.dist.is_main and not self.disable_checkpointing:
            state = self.checkpoint_state(next_epoch, resume_iteration, partial, slim=filename in SLIM_CHECKPOINTS)
            save_checkpoint(state, self.output_folder / filename)
        self.dist.barrier()

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore network, optimiser, scaler, scheduler, logs, EMA and RNG from a longnet checkpoint."""
        ckpt = load_checkpoint(path, map_location=self.device,
                               required=("network_weights", "current_epoch", "optimizer_state"))
        self.restore_network(ckpt, path)
        if ckpt.get("optimizer_state") is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if ckpt.get("grad_scaler_state") is not None and self.grad_scaler is not None:
            self.grad_scaler.load_state_dict(ckpt["grad_scaler_state"])
        if ckpt.get("scheduler_state") is not None and self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(ckpt["scheduler_state"])
        self.current_epoch = int(ckpt["current_epoch"])
        self.logger.load_state(ckpt.get("logging") or {}, self.current_epoch)
        self._best_ema = ckpt.get("_best_ema")
        self._ema = ckpt.get("_ema")
        self.num_optimizer_steps = int(ckpt.get("num_optimizer_steps", 0))
        self._resume_iteration = int(ckpt.get("_resume_iteration", 0))
        self._resumed_positions = {str(k): int(v) for k, v in (ckpt.get("stream_positions") or {}).items()}
        self._note_changed_options(ckpt.get("trainer_options"))
        self._partial_outputs = list(ckpt.get("_partial_train_outputs") or [])
        if ckpt.get("rng_state"):
            set_rng_state(ckpt["rng_state"])
        self.load_checkpoint_extra(ckpt.get("extra") or {})
        return ckpt

    def _note_changed_options(self, saved: dict | None) -> None:
        """Resuming with other trainer options continues the run with the new values, except for what the
        restored state holds (the optimiser's learning rate, the scheduler): say which ones changed."""
        if not saved or self.opts is None:
            return
        now = to_plain(dataclasses.asdict(self.opts))
        changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(now) if k in saved and saved[k] != now[k]]
        if changed:
            self.print("resuming with changed options: " + ", ".join(changed) + " (the restored optimiser and "
                       "scheduler keep the checkpoint's state, e.g. its learning rate)")

    def restore_network(self, ckpt: dict, path: str | Path) -> None:
        """Load a checkpoint's weights; a slim one (see SLIM_CHECKPOINTS) may lack only `resume_only_prefixes`
        tensors, which keep their current (fresh) values."""
        net = unwrap(self.network)
        weights = strip_prefixes(ckpt["network_weights"])
        try:
            if ckpt.get("resumable") is False:
                missing, unexpected = net.load_state_dict(weights, strict=False)
                other = [k for k in missing if not k.startswith(tuple(self.resume_only_prefixes))] + list(unexpected)
                if other:
                    raise RuntimeError(f"mismatched tensors: {', '.join(other[:3])}")
            else:
                net.load_state_dict(weights)
        except RuntimeError as e:
            raise LongnetError(f"checkpoint does not match this trainer's network ({str(e).splitlines()[0]})",
                               path) from None

    def find_resume_checkpoint(self) -> tuple[str, Path] | None:
        """('latest'|'final'|'best', path) to continue from, in that order of preference, or None."""
        if self.output_folder is None:
            return None
        for kind in ("latest", "final", "best"):
            p = self.output_folder / f"checkpoint_{kind}.pth"
            if p.is_file():
                return kind, p
        return None

    def update_best(self, metrics: dict, epoch: int) -> None:
        """EMA (0.9 old / 0.1 new) of the selection metric; save checkpoint_best when it improves."""
        value = metrics.get(self.best_metric)
        if value is None or value != value:  # missing or NaN: no update
            return
        self._ema = float(value) if self._ema is None else self.ema_decay * self._ema + (1 - self.ema_decay) * float(value)
        self.logger.log(f"ema_{self.best_metric}", self._ema, epoch)
        better = (self._best_ema is None or (self._ema > self._best_ema if self.best_metric_mode == "max"
                                             else self._ema < self._best_ema))
        if better:
            self._best_ema = self._ema
            smoothed = "EMA " if self.ema_decay else ""  # decay 0: the raw value (e.g. TFM's frozen draws)
            self.print(f"new best {smoothed}{self.best_metric}: {self._ema:.4f}")
            self.save_checkpoint("checkpoint_best.pth", epoch + 1)
