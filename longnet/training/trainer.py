"""The Trainer base class: it owns the training loop; plugins override hooks only.

Hooks (override in a plugin): `requirements`, `add_arguments`, `build_network`, `configure_optimizers`,
`train_loader`, `val_loader`, `training_step`, `validation_step`, `aggregate_validation`, `on_epoch_start`,
`on_epoch_end`, `final_validation`, `checkpoint_extra`/`load_checkpoint_extra`, `prepare_batch`,
`backward_and_step`; the prediction contract (`prediction_task`, `add_prediction_arguments`,
`build_inference_network`, `from_checkpoint`, `run_prediction`) comes from `prediction_contract`. The base
does device, seeding, AMP, torch.compile (+ eager fallback), DDP, gradient clipping, checkpoints (latest/best/
final, SIGTERM), resume, text log, progress.png, TensorBoard and tqdm; docs/plugin_api.md lists the hooks in
call order.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from longnet.data.dataset_index import DatasetIndex
from longnet.data.loader import batch_iterator, default_num_workers
from longnet.dataset.labels import LabelManager
from longnet.planning.plans import Plans
from longnet.training import runtime
from longnet.io.checkpoints import load_pretrained_weights
from longnet.training.distributed import DistContext
from longnet.training.logger import TrainingLogger
from longnet.training.options import (CORE_OPTION_RANGES, add_option_arguments, option_value,
                                      parse_options)
from longnet.training.options import check_options as check_option_ranges
from longnet.training.prediction_contract import PredictionContract
from longnet.training.requirements import Requirements, alignment_warning, check_requirements
from longnet.training.trainer_state import TrainerStateMixin


class TrainingInterrupted(Exception):
    """SIGTERM received: checkpoint_latest.pth was written mid-epoch and training stopped."""


class Trainer(PredictionContract, TrainerStateMixin):
    """Base class of all longnet trainers (generic loop, no task-specific code)."""

    requirements: ClassVar[Requirements] = Requirements()
    num_epochs: int = 1000
    num_iterations_per_epoch: int = 250
    num_val_iterations_per_epoch: int = 50
    save_every: int = 50
    grad_clip_norm: float | None = 12.0
    best_metric: str = "val_loss"
    best_metric_mode: str = "min"
    ema_decay: float = 0.9
    lr_scheduler_interval: ClassVar[str] = "epoch"  # "step": the scheduler is stepped after every optimiser step
    inference_allowed_mirroring_axes: tuple[int, ...] | None = None
    # a dataclass of `option(...)` fields: generates the trainer's flags, holds each default once, checks ranges;
    # an instance with this run's values is `self.opts` (and is saved in checkpoints)
    options_class: ClassVar[type | None] = None
    hidden_options: ClassVar[tuple[str, ...]] = ()  # fields of options_class this trainer offers no flag for

    def __init__(self, plans: Plans | dict, configuration: str, fold: int | str, dataset_json: dict,
                 device: str | torch.device = "cpu", options: dict | None = None):
        self.plans = plans if isinstance(plans, Plans) else Plans(plans)
        self.configuration_name = configuration
        self.configuration_manager = self.plans.configuration(configuration)
        self.fold = fold
        self.dataset_json = dataset_json
        self.options = dict(options or {})
        self.device = runtime.resolve_device(device)
        self.trainer_name = type(self).__name__
        self.init_args = {"plans": self.plans.plans, "configuration": configuration, "fold": fold,
                          "dataset_json": dataset_json, "options": self.options}
        opt = self.options
        # in-process callers get the same range errors as longnet_train (parse_options checks the typed ones)
        check_option_ranges(opt, CORE_OPTION_RANGES)
        self.opts = parse_options(type(self).options_class, opt) if type(self).options_class else None
        self.seed = int(option_value(opt, "seed", 12345))
        self.num_epochs = int(option_value(opt, "epochs", self.num_epochs))
        self.num_iterations_per_epoch = int(option_value(opt, "iters_per_epoch", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = int(option_value(opt, "val_iters", self.num_val_iterations_per_epoch))
        self.save_every = int(option_value(opt, "save_every", self.save_every))
        self.disable_checkpointing = bool(opt.get("disable_checkpointing", False))
        self.dist = DistContext()
        self.network: nn.Module | None = None
        self.optimizer = self.lr_scheduler = self.grad_scaler = None
        self.amp_dtype: torch.dtype | None = None
        self.current_epoch = 0
        self.num_optimizer_steps = 0
        self._best_ema = self._ema = None
        self._resume_iteration, self._partial_outputs = 0, []
        self._step_logs: dict[str, Any] = {}
        self._stream_positions: dict[str, int] = {}  # batches the loop has taken from each named stream
        self._resumed_positions: dict[str, int] = {}  # ... as recorded by the checkpoint this run resumed from
        self._compiled = False
        self._compile_verified: set[str] = set()
        self._eager_network: nn.Module | None = None
        self._stop_requested = False
        self.output_folder: Path | None = None
        self.preprocessed_dataset_folder: Path | None = None
        self.train_cases: list[str] = []
        self.val_cases: list[str] = []
        self.dataset_index: DatasetIndex | None = None
        self.logger = TrainingLogger(None, False)

    # ================================================================= hooks for plugins
    @classmethod
    def check_options(cls, options: dict) -> None:
        """Refuse options outside their range or choices (longnet_train's shared ones and those of
        `options_class`), naming the flag; called by longnet_train before anything is written (__init__ applies
        the same checks)."""
        check_option_ranges(options, CORE_OPTION_RANGES)
        if cls.options_class is not None:
            parse_options(cls.options_class, options, check_required=False)  # their ranges and choices

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add trainer-specific command-line options (their values arrive in `self.options`); the default adds
        the flags of `options_class`."""
        if cls.options_class is not None:
            add_option_arguments(parser, cls.options_class, cls.hidden_options)

    def get_requirements(self) -> Requirements:
        """Requirements for this run; override when they depend on options (e.g. a `--score-column`)."""
        return self.requirements

    def build_network(self) -> nn.Module:
        """Return the module to train (everything trained, heads included, must live in it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_network()")

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, Any]:
        """Return (optimizer, scheduler or None); the scheduler is stepped once per epoch, or after every
        optimiser step with `lr_scheduler_interval = "step"`."""
        raise NotImplementedError(f"{type(self).__name__} must implement configure_optimizers()")

    def train_loader(self) -> Iterable[dict]:
        """Endless iterable of training batches; use `self.make_batch_iterator` for seeded background loading."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_loader()")

    def val_loader(self) -> Iterable[dict] | None:
        """Endless iterable of validation batches (None: no per-epoch validation)."""
        return None

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Forward + loss on one batch; must return {'loss': tensor, ...}. Other entries, and values passed to
        `self.log`, are averaged over the steps that have them and logged per epoch as train_<key>."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step()")

    def validation_step(self, batch: dict) -> dict[str, Any]:
        """Metrics of one validation batch (floats or arrays); combined by `aggregate_validation`."""
        return {}

    def aggregate_validation(self, outputs: list[dict]) -> dict[str, Any]:
        """Combine the validation outputs of an epoch (all ranks): default = mean of scalars, named val_<key>."""
        out: dict[str, Any] = {}
        for key in outputs[0] if outputs else []:
            vals = [o[key] for o in outputs if np.ndim(o.get(key)) == 0]
            if vals:
                out[f"val_{key}"] = float(np.mean(vals))
        return out

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first training iteration of `epoch`."""

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Called after validation and logging of `epoch` with that epoch's metrics."""

    def final_validation(self) -> None:
        """Full validation after training into `output_folder/validation/`. The base calls it on rank 0 only
        (the other ranks wait) and not at all with `--disable-final-validation` or without an output folder."""

    def checkpoint_extra(self) -> dict:
        """Extra plain data (tensors, numbers, str, lists, dicts) to store in every checkpoint."""
        return {}

    def load_checkpoint_extra(self, extra: dict) -> None:
        """Restore what `checkpoint_extra` saved."""

    def prepare_batch(self, batch: Any) -> Any:
        """Move a batch to the device (trainers that augment on the device do it here, after the transfer)."""
        return _to_device(batch, self.device)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward, gradient clipping and optimiser step, with fp16 loss scaling when active."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            if self.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            if self.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            self.optimizer.step()

    # ================================================================= helpers for plugins
    @property
    def label_manager(self) -> LabelManager:
        return LabelManager.from_dataset_json(self.dataset_json)

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json.get("channel_names") or self.dataset_json.get("modality") or {"0": ""})

    @property
    def data_folder(self) -> Path:
        return self.preprocessed_dataset_folder / self.configuration_manager.data_identifier

    def log(self, name: str, value: torch.Tensor | float) -> None:
        """Log a scalar of this training step under `train_<name>` (any keys, any steps; a tensor stays on the
        device until the epoch ends, so logging never waits for the GPU)."""
        self._step_logs[name] = value.detach().float() if torch.is_tensor(value) else float(value)

    def print(self, *parts: Any) -> None:
        """Write to the training log (rank 0) and stdout."""
        self.logger.print(*parts)

    def make_batch_iterator(self, make_batch: Callable[[np.random.Generator], dict], stream: str = "train",
                            num_workers: int | None = None, start_index: int | None = None) -> Iterator[dict]:
        """Seeded background loader of a named stream (batch k depends on seed, rank, stream and k only). The base
        counts the batches the loop takes from every stream and keeps the counts in checkpoints, so a resumed run
        continues each stream where it stopped, however the trainer interleaves them."""
        if start_index is None:
            start_index = self._resumed_positions.get(stream)
        if start_index is None:  # checkpoints written before streams were counted
            start_index = {"train": self.current_epoch * self.num_iterations_per_epoch + self._resume_iteration,
                           "val": self.current_epoch * self.num_val_iterations_per_epoch}.get(stream, 0)
        if num_workers is None:
            n = default_num_workers()
            num_workers = n if stream == "train" else (max(1, n // 2) if n > 0 else 0)
        self._stream_positions[stream] = int(start_index)
        return _counted(batch_iterator(make_batch, seed=self.seed, rank=self.dist.rank, stream=stream,
                                       start_index=start_index, num_workers=num_workers,
                                       pin_memory=self.device.type == "cuda"), self._stream_positions, stream)

    # ================================================================= setup
    def setup(self, preprocessed_dataset_folder: str | Path | None, output_folder: str | Path | None,
              train_cases: list[str], val_cases: list[str], dist: DistContext | None = None,
              verbose: bool = True) -> None:
        """Attach data, output folder and process group (done by `longnet_train` before `run_training`)."""
        self.preprocessed_dataset_folder = Path(preprocessed_dataset_folder) if preprocessed_dataset_folder else None
        self.output_folder = Path(output_folder) if output_folder else None
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.dist = dist or DistContext()
        self.logger = TrainingLogger(self.output_folder, self.dist.is_main, bool(self.options.get("tensorboard")),
                                     verbose, title=self.run_title())
        if self.preprocessed_dataset_folder is not None:
            full = DatasetIndex.load(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier)
            self.dataset_index = full.restrict(self.train_cases)

    def run_title(self) -> str:
        """`Trainer · dataset · plans · configuration · fold`: the title of this run's pictures."""
        plans = self.plans.plans
        parts = [self.trainer_name, plans.get("dataset_name"), plans.get("plans_name"), self.configuration_name,
                 f"fold {self.fold}"]
        return " · ".join(str(p) for p in parts if p)

    def initialize(self) -> None:
        """Seed, build the network (+ pretrained weights), compile, wrap in DDP, create optimiser and scaler."""
        runtime.seed_everything(self.seed)
        runtime.configure_backends(self.device, bool(self.options.get("deterministic")))
        self.amp_dtype = runtime.resolve_amp(self.device, self.options.get("amp"))
        net = self.build_network().to(self.device)
        if self.options.get("pretrained_weights"):
            load_pretrained_weights(net, self.options["pretrained_weights"], log=self.print,
                                    exclude_prefixes=self.pretrained_exclude_prefixes(net))
        self._eager_network = net
        self.network = net
        if runtime.compile_wanted(self.device):
            self.print("compiling the network with torch.compile (LONGNET_COMPILE=0 disables)")
            self.network = torch.compile(net)
            self._compiled = True
        self._wrap_ddp()
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
        self.grad_scaler = runtime.make_grad_scaler(self.device, self.amp_dtype)

    def pretrained_exclude_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        """Hook: parameter-name prefixes that `--pretrained-weights` must not overwrite (default: none)."""
        return ()

    def _wrap_ddp(self) -> None:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DDP(self.network, device_ids=ids)

    def _fall_back_to_eager(self, error: BaseException) -> None:
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                      f"continuing without compilation (set LONGNET_COMPILE=0 to skip the attempt)")
        self.print("torch.compile failed, falling back to eager mode")
        self._compiled = False
        self.network = self._eager_network
        self._wrap_ddp()

    def _guarded(self, fn: Callable, *args):
        """Run fn; the first time a compiled network fails, switch to eager once and retry."""
        if not self._compiled or fn.__name__ in self._compile_verified:
            return fn(*args)
        try:
            result = fn(*args)
            self._compile_verified.add(fn.__name__)
            return result
        except Exception as e:
            self.optimizer.zero_grad(set_to_none=True)
            self._fall_back_to_eager(e)
            return fn(*args)

    # ================================================================= the loop
    def check_requirements(self) -> None:
        """Raise a LongnetError naming what the training split lacks for this trainer (see `requirements`)."""
        check_requirements(self.get_requirements(), self.dataset_index or DatasetIndex([]), self.trainer_name)
        warning = alignment_warning(self.get_requirements(), self.plans.plans, self.trainer_name)
        if warning and not getattr(self, "_alignment_warned", False):
            self._alignment_warned = True
            print(warning, file=sys.stderr)

    def run_training(self, resume: bool = False) -> None:
        """Train from scratch or (resume=True) from latest → final (done) → best checkpoint."""
        self.check_requirements()
        self.initialize()
        if resume:
            found = self.find_resume_checkpoint()
            if found is None:
                self.print("--c given but no checkpoint found: starting a new training")
            else:
                kind, path = found
                ckpt = self.load_checkpoint(path)
                self.print(f"resumed from {path.name} at epoch {self.current_epoch}"
                           + (f", iteration {self._resume_iteration}" if self._resume_iteration else ""))
                if kind != "final" and ckpt.get("resumable") is False:
                    self.print(f"{path.name} keeps the network only: {', '.join(self.resume_only_prefixes)} and the "
                               "optimiser state start afresh (checkpoint_latest.pth keeps them; see --save-every)")
                if kind == "final":
                    self.print("training already finished (checkpoint_final.pth exists)")
                    if not (self.output_folder / "validation" / "summary.json").is_file():
                        self._run_final_validation()
                    self.logger.close()
                    return
        if self.options.get("random_init"):  # the baseline: the initialised network, no step taken
            self.save_checkpoint("checkpoint_final.pth", 0)
            self.print("--random-init: wrote the freshly initialised network as checkpoint_final.pth (no training)")
            self._run_final_validation()
            self.logger.close()
            return
        self._log_setup()
        # the handler goes in before the loaders start their workers (which ignore SIGTERM): a scheduler's SIGTERM
        # to the whole process group then ends in checkpoint_latest.pth and exit 143, not in a worker's traceback
        installed = _main_thread()
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if installed else None
        train_iter = val_iter = None
        try:
            train_iter = iter(self.train_loader())
            val_source = self.val_loader()
            val_iter = iter(val_source) if val_source is not None else None
            for epoch in range(self.current_epoch, self.num_epochs):
                self._run_epoch(epoch, train_iter, val_iter)
                if epoch + 1 < self.num_epochs and self._stop_now():  # arrived during validation / epoch end
                    self.save_checkpoint("checkpoint_latest.pth", self.current_epoch)
                    raise TrainingInterrupted()
        except TrainingInterrupted:
            self.logger.print("stopped by SIGTERM; resume with --c", also_stdout=False)
            if self.dist.is_main:
                saved = "nothing saved (checkpointing disabled)"
                if not self.disable_checkpointing and self.output_folder is not None:
                    saved = f"{self.output_folder / 'checkpoint_latest.pth'} written; resume with --c"
                print(f"longnet: stopped by SIGTERM: {saved}", file=sys.stderr, flush=True)
            self.logger.close()
            raise
        finally:
            if installed:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            del train_iter, val_iter
        self.save_checkpoint("checkpoint_final.pth", self.current_epoch)
        if self.dist.is_main and self.output_folder is not None:
            (self.output_folder / "checkpoint_latest.pth").unlink(missing_ok=True)
        self.print(f"training finished after {self.current_epoch} epochs ({self.num_optimizer_steps} optimiser steps)")
        if self.options.get("val_best"):
            self.load_network_weights("checkpoint_best.pth")
        self._run_final_validation()
        self.logger.close()

    def run_validation_only(self) -> None:
        """`--val`: the final validation of a finished training (`--val_best`: with the best checkpoint)."""
        self.check_requirements()
        self.initialize()
        self.load_network_weights("checkpoint_best.pth" if self.options.get("val_best") else "checkpoint_final.pth")
        self._run_final_validation()
        self.logger.close()

    def load_network_weights(self, checkpoint_name: str) -> None:
        """The network's weights of `output_folder/checkpoint_name` and what `checkpoint_extra` saved with them
        (no optimiser, no epoch): `--val` and `--val_best` validate the model as it was trained."""
        from longnet.errors import LongnetError
        from longnet.io.checkpoints import load_checkpoint

        path = self.output_folder / checkpoint_name
        if not path.is_file():
            raise LongnetError(f"{checkpoint_name} not found: --val needs a finished training of this fold "
                               "(--val_best: a checkpoint_best.pth)", path)
        ckpt = load_checkpoint(path, map_location=self.device, required=("network_weights",))
        self.restore_network(ckpt, path)
        self.load_checkpoint_extra(ckpt.get("extra") or {})
        self.print(f"network weights from {checkpoint_name} (epoch {ckpt.get('current_epoch', '?')})")

    def _run_final_validation(self) -> None:
        if self.output_folder is not None and not self.options.get("disable_final_validation") and self.dist.is_main:
            self.final_validation()
        self.dist.barrier()

    def _on_sigterm(self, signum, frame) -> None:
        self._stop_requested = True

    def _log_setup(self) -> None:
        self.print(f"trainer {self.trainer_name}, configuration {self.configuration_name}, fold {self.fold}, "
                   f"device {self.device}, world size {self.dist.world_size}, seed {self.seed}, "
                   f"amp {self.amp_dtype}, compile {self._compiled}")
        self.print(f"{len(self.train_cases)} training / {len(self.val_cases)} validation cases; "
                   f"{self.num_epochs} epochs x {self.num_iterations_per_epoch} iterations")

    def _stop_now(self) -> bool:
        if not self.dist.enabled:
            return self._stop_requested
        import torch.distributed as tdist

        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)  # every rank stops at the same iteration
        return bool(flag.item() > 0)

    def _train_one(self, batch: dict) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        self._step_logs = {}
        with runtime.autocast(self.device, self.amp_dtype):
            out = self.training_step(batch)
        if "loss" not in out:
            raise KeyError(f"{type(self).__name__}.training_step must return a dict with a 'loss' entry")
        self.backward_and_step(out["loss"])
        if self.lr_scheduler is not None and self.lr_scheduler_interval == "step":
            self.lr_scheduler.step()
        # detached device tensors, read back once per epoch: a per-step .item() would stall the GPU queue
        logged = {k: v.detach().float() if torch.is_tensor(v) else float(v) for k, v in out.items()}
        return {**self._step_logs, **logged}

    def _validate_one(self, batch: dict) -> dict:
        with torch.no_grad(), runtime.autocast(self.device, self.amp_dtype):
            return self.validation_step(batch)

    def _run_epoch(self, epoch: int, train_iter: Iterator, val_iter: Iterator | None) -> None:
        t0 = time.time()
        self.network.train()
        self.logger.log("lr", self.optimizer.param_groups[0]["lr"], epoch)
        self.on_epoch_start(epoch)
        outputs = list(self._partial_outputs)
        start = self._resume_iteration
        self._partial_outputs, self._resume_iteration = [], 0
        bar = tqdm(range(start, self.num_iterations_per_epoch), desc=f"epoch {epoch}", leave=False,
                   disable=not (self.dist.is_main and sys.stderr.isatty()))
        for it in bar:
            out = self._guarded(self._train_one, self.prepare_batch(self._next_batch(train_iter, epoch, it, outputs)))
            self.num_optimizer_steps += 1
            outputs.append(out)
            if not bar.disable and it % 10 == 0:
                bar.set_postfix(loss=f"{float(out['loss']):.4f}")
            if self._stop_now():
                self.save_checkpoint("checkpoint_latest.pth", epoch, it + 1, _as_floats(outputs))
                raise TrainingInterrupted()
        train_metrics = self._mean_over_ranks(_as_floats(outputs))
        for k, v in train_metrics.items():
            self.logger.log(f"train_{k}", v, epoch)
        if self.lr_scheduler is not None and self.lr_scheduler_interval == "epoch":
            self.lr_scheduler.step()
        metrics = {f"train_{k}": v for k, v in train_metrics.items()}
        if val_iter is not None and self.num_val_iterations_per_epoch > 0:
            self.network.eval()
            val_out = [self._guarded(self._validate_one, self.prepare_batch(next(val_iter)))
                       for _ in range(self.num_val_iterations_per_epoch)]
            gathered = [o for rank_out in self.dist.all_gather_object(val_out) for o in rank_out]
            val_metrics = self.aggregate_validation(gathered)
            for k, v in val_metrics.items():
                self.logger.log(k, v, epoch)
            metrics.update(val_metrics)
        self.logger.log("num_optimizer_steps", self.num_optimizer_steps, epoch)
        self.update_best(metrics, epoch)
        self.logger.log("epoch_time", time.time() - t0, epoch)
        self.on_epoch_end(epoch, metrics)
        self.current_epoch = epoch + 1
        if self.current_epoch % self.save_every == 0 and self.current_epoch != self.num_epochs:
            self.save_checkpoint("checkpoint_latest.pth", self.current_epoch)
        if self.dist.is_main:
            self.logger.plot_progress()
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        self.print(f"epoch {epoch}: {shown}, {time.time() - t0:.1f} s")

    def _next_batch(self, iterator: Iterator, epoch: int, it: int, outputs: list) -> Any:
        """The next batch; if the loader's workers left because the SIGTERM that stops this run reached them too,
        checkpoint at this iteration and stop, as if the signal had come between two steps."""
        try:
            return next(iterator)
        except RuntimeError:
            if not self._stop_requested:
                raise
            self.save_checkpoint("checkpoint_latest.pth", epoch, it, _as_floats(outputs))
            raise TrainingInterrupted() from None

    def _mean_over_ranks(self, outputs: list[dict]) -> dict[str, float]:
        """Per key: the mean over the steps that logged it, then over the ranks that have it."""
        local = {k: float(np.mean([o[k] for o in outputs if k in o])) for k in _keys(outputs)}
        if not self.dist.enabled:
            return local
        all_means = self.dist.all_gather_object(local)
        return {k: float(np.mean([m[k] for m in all_means if k in m])) for k in _keys(all_means)}


def _counted(iterator: Iterator[dict], positions: dict[str, int], stream: str) -> Iterator[dict]:
    """Yield from `iterator`, advancing positions[stream] by one per batch taken."""
    for batch in iterator:
        positions[stream] += 1
        yield batch


def _keys(dicts: list[dict]) -> list[str]:
    """Every key of a list of dicts, in first-seen order (steps may log different keys)."""
    return list(dict.fromkeys(k for d in dicts for k in d))


def _as_floats(outputs: list[dict]) -> list[dict[str, float]]:
    """Per-step outputs as plain floats (one device read per key for the whole epoch)."""
    floats: list[dict[str, float]] = [{} for _ in outputs]
    for k in _keys(outputs):
        steps = [i for i, o in enumerate(outputs) if k in o]
        vals = [outputs[i][k] for i in steps]
        if all(torch.is_tensor(v) for v in vals):
            column = torch.stack([v.reshape(()) for v in vals]).cpu().tolist()
        else:  # resumed epochs start with floats from the checkpoint
            column = [float(v) for v in vals]
        for i, v in zip(steps, column):
            floats[i][k] = v
    return floats


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _to_device(obj: Any, device: torch.device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)
