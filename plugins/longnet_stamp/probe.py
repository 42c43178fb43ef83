"""`STAMPProbeTrainer`: attention-pooling probe on a frozen STAMP encoder predicting a binary visitsTr.csv column.

The scan's CLS gets the Δt-embedding of `--horizon-days` (binned with the encoder's own window), z is drawn from
the prior (no future scan exists at inference), BCE with pos_weight = #negatives / #positives of the training
visits. `--random-encoder` probes a randomly initialised encoder (the baseline); `--encoder CKPT` a pretrained
STAMP or Siamese-MAE checkpoint.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet.api import (LongnetError, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, Trainer,
    WarmupCosineScheduler, classification_metrics, load_checkpoint, option, save_json, strip_prefixes, unwrap)
from longnet_stamp.common import WindowOptions, cache_bytes, param_groups, resolve_window, split_index
from longnet_stamp.config import ArchitectureOptions, STAMPConfig, config_from_options
from longnet_stamp.data import ScanBatcher, labelled_cases
from longnet_stamp.model import STAMPNet
from longnet_stamp.probe_net import STAMPProbeNet

MAX_VAL_BATCH = 64


def best_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Decision threshold maximising balanced accuracy (STAMP's rule); 0.5 when only one class is present."""
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        return 0.5
    best, best_t = -1.0, 0.5
    for t in np.unique(y_prob):
        pred = (y_prob >= t).astype(int)
        bacc = 0.5 * ((pred[y_true == 1] == 1).mean() + (pred[y_true == 0] == 0).mean())
        if bacc > best + 1e-12:
            best, best_t = bacc, float(t)
    return best_t


def encoder_from_checkpoint(path: str) -> tuple[STAMPNet, dict]:
    """A STAMPNet with the weights of a STAMPTrainer checkpoint (configuration from its `extra`)."""
    ckpt = load_checkpoint(path)
    cfg_dict = (ckpt.get("extra") or {}).get("stamp_config")
    if not cfg_dict:
        raise LongnetError("not a STAMPTrainer checkpoint (no extra.stamp_config)", path)
    net = STAMPNet(STAMPConfig.from_dict(cfg_dict))
    weights = strip_prefixes(ckpt["network_weights"])
    if any(k.startswith("stamp.") for k in weights):  # a probe checkpoint: take its frozen encoder
        weights = {k[len("stamp."):]: v for k, v in weights.items() if k.startswith("stamp.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise LongnetError(f"encoder weights do not match their configuration ({str(e).splitlines()[0]})",
                           path) from None
    return net, ckpt


@dataclass(frozen=True)
class ProbeOptions(ArchitectureOptions, WindowOptions):
    """STAMPProbeTrainer's options (the architecture ones size a --random-encoder)."""

    target: str | None = option(None, "binary visitsTr.csv column to predict (e.g. converter)", required=True)
    horizon_days: float | None = option(None, "prediction horizon in days; its Δt-embedding is added to the scan's "
                                              "CLS", required=True, range=NON_NEGATIVE_FLOAT)
    encoder: str | None = option(None, "checkpoint of a STAMPTrainer run (STAMP or Siamese-MAE); give it or "
                                       "--random-encoder")
    random_encoder: bool = option(False, "randomly initialised encoder (the baseline; sizes from --preset etc.)")
    augment: bool = option(False, "random crops + flips, encoder run every step (default: the frozen encoder's "
                                  "tokens of each centre-cropped scan are computed once and cached)")
    encoder_tokens: bool = option(False, "probe a STAMP encoder's own tokens (deterministic mode) instead of "
                                         "[z from the prior ; projected tokens]")
    probe_heads: int | None = option(None, "attention heads of the pooling probe (None: 12 or the largest divisor)",
                                     range=POSITIVE_INT)
    batch_size: int = option(32, "scans per step", range=POSITIVE_INT)
    lr: float = option(1e-3, "AdamW learning rate", range=POSITIVE_FLOAT)
    warmup_epochs: int | None = option(None, "warm-up epochs (None: 10, at most a tenth of the epochs)",
                                       range=NON_NEGATIVE_INT)
    prior_samples: int = option(4, "z samples from the prior averaged at validation/prediction", range=POSITIVE_INT)
    val_iters: int | None = option(None, "validation batches per epoch (None: 1 = all validation visits up to 64)",
                                   range=NON_NEGATIVE_INT)


class STAMPProbeTrainer(Trainer):
    """Frozen encoder + attention-pooling probe; AdamW lr 1e-3, wd 0, warm-up then cosine (per epoch)."""

    prediction_task = "classification"
    options_class = ProbeOptions
    num_epochs = 200
    num_iterations_per_epoch = 25
    num_val_iterations_per_epoch = 1
    best_metric = "val_loss"
    best_metric_mode = "min"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.opts
        if bool(o.encoder) == o.random_encoder:
            raise LongnetError("STAMPProbeTrainer needs either --encoder CKPT (a STAMPTrainer checkpoint) or "
                               "--random-encoder")
        # absolute, so a resumed run or a copied checkpoint still finds it (the options travel in checkpoints)
        self.encoder = str(Path(o.encoder).expanduser().resolve()) if o.encoder else None
        self.options["encoder"] = self.encoder
        self.target = str(o.target)
        self.horizon = float(o.horizon_days)
        self.threshold = 0.5
        self.stamp_config: STAMPConfig | None = None
        self._train_targets: dict[str, float] = {}
        self._train_index = None
        self._last_val: dict | None = None
        self._batchers: dict[str, ScanBatcher] = {}
        self._features: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ requirements
    def check_requirements(self) -> None:
        super().check_requirements()
        self._load_targets()

    def _load_targets(self) -> None:
        self._train_index = split_index(self, self.train_cases)
        self._train_targets = labelled_cases(self._train_index, self.target)
        values = set(self._train_targets.values())
        if values != {0.0, 1.0}:
            found = "no visit has it" if not values else f"only class {int(next(iter(values)))} occurs"
            raise LongnetError(f"target column {self.target!r} (visitsTr.csv) must have both classes 0 and 1 in "
                               f"the training split; {found}", self.preprocessed_dataset_folder)

    @property
    def pos_weight(self) -> float:
        """#negatives / #positives of the training visits, computed once (a plain number inside the step)."""
        if getattr(self, "_pos_weight", None) is None:
            y = np.array(list(self._train_targets.values()))
            self._pos_weight = float((y == 0).sum() / max(1, (y == 1).sum()))
        return self._pos_weight

    # ------------------------------------------------------------------ network / optimiser
    def build_network(self) -> nn.Module:
        if self._train_index is None:
            self._load_targets()
        if self.encoder:
            stamp, _ = encoder_from_checkpoint(self.encoder)
            source = self.encoder
        else:
            try:
                window = resolve_window(self.opts, self._train_index)
            except LongnetError:  # no visit pairs: the window only sets the horizon's bin here
                window = (0.0, max(1.0, self.horizon))
            opts = replace(self.opts, deterministic_mae=True)  # a random encoder is probed on its own tokens
            stamp = STAMPNet(config_from_options(opts, self.num_input_channels,
                                                 self.configuration_manager.patch_size, *window))
            source = "random initialisation"
        self.stamp_config = stamp.cfg
        net = STAMPProbeNet(stamp, self.opts.probe_heads, not self.opts.encoder_tokens)
        u = float(stamp.binning.normalise(torch.tensor(self.horizon)))
        self.print(f"probe on a frozen {'stochastic (prior z)' if net.use_latent else 'deterministic'} encoder "
                   f"({source}); horizon {self.horizon:g} days -> u={u:.3f}, bin "
                   f"{int(stamp.binning(torch.tensor(self.horizon)))}/{stamp.cfg.dt_bins}; pos_weight "
                   f"{self.pos_weight:.3f} ({len(self._train_targets)} training visits)")
        return net

    def configure_optimizers(self):
        probe = unwrap(self.network).probe
        lr = self.opts.lr
        opt = torch.optim.AdamW(param_groups(probe, 0.0), lr=lr, weight_decay=0.0)
        warm = self.opts.warmup_epochs
        warm = min(10, self.num_epochs // 10) if warm is None else int(warm)
        return opt, WarmupCosineScheduler(opt, self.num_epochs, warm)

    # ------------------------------------------------------------------ data
    @property
    def input_size(self):
        return self.stamp_config.img_size

    @property
    def cached(self) -> bool:
        """Train on cached encoder tokens (no augmentation): the encoder is frozen and deterministic."""
        return not self.opts.augment

    def train_loader(self):
        from longnet.api import split_batch

        total = self.opts.batch_size
        local = split_batch(total, self.dist.world_size, self.dist.rank)[0]
        batcher = ScanBatcher(self._train_index, self._train_targets, local, self.input_size, self.horizon,
                              train=not self.cached, cache_bytes=cache_bytes(), images=not self.cached)
        self._batchers["train"] = batcher
        return self.make_batch_iterator(batcher.make_batch, "train")

    def _val_batcher(self) -> ScanBatcher | None:
        if not self.val_cases:
            return None
        index = split_index(self, self.val_cases)
        targets = labelled_cases(index, self.target)
        if not targets:
            return None
        n = min(len(targets), MAX_VAL_BATCH)
        return ScanBatcher(index, targets, n, self.input_size, self.horizon, train=False, cache_bytes=cache_bytes(),
                           images=not self.cached)

    def val_loader(self):
        batcher = self._val_batcher()
        if batcher is None:
            self.print(f"no validation visit has {self.target!r}: per-epoch validation disabled")
            return None
        self._batchers["val"] = batcher
        if len(batcher.cases) <= MAX_VAL_BATCH:  # every validation visit, in order, every epoch
            full = batcher.make_batch_all()
            return self.make_batch_iterator(lambda rng: full, "val", num_workers=0)
        return self.make_batch_iterator(batcher.make_batch, "val")

    def _encoded(self, stream: str, index: torch.Tensor) -> torch.Tensor:
        """Cached frozen-encoder tokens of the batch's scans (all scans of `stream` encoded on first use)."""
        if stream not in self._features:
            batcher = self._batchers[stream]
            net = unwrap(self.network)
            dt = torch.full((1,), self.horizon, device=self.device)
            feats = []
            for case in batcher.cases:
                x = torch.from_numpy(batcher.load(case, None))[None].to(self.device)
                feats.append(net.encode(x, dt.expand(1)))
            self._features[stream] = torch.cat(feats)
            self.print(f"cached frozen-encoder tokens of {len(feats)} {stream} scans "
                       f"({tuple(self._features[stream].shape[1:])} each)")
        return self._features[stream][index.to(self._features[stream].device)]

    # ------------------------------------------------------------------ steps
    def _bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pw = torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pw)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.cached:
            logits = self.network(None, None, self._encoded("train", batch["index"]))
        else:
            logits = self.network(batch["image"], batch["dt"])
        return {"loss": self._bce(logits, batch["target"])}

    def validation_step(self, batch: dict) -> dict:
        samples = self.opts.prior_samples
        net = unwrap(self.network)
        if self.cached:
            prob = net.predict_proba(None, None, samples, encoded=self._encoded("val", batch["index"]))
        else:
            prob = net.predict_proba(batch["image"], batch["dt"], samples)
        logit = torch.logit(prob.clamp(1e-6, 1 - 1e-6))
        return {"loss": float(self._bce(logit, batch["target"])), "prob": prob.cpu().numpy(),
                "target": batch["target"].cpu().numpy()}

    def aggregate_validation(self, outputs: list[dict]) -> dict:
        prob = np.concatenate([o["prob"] for o in outputs])
        target = np.concatenate([o["target"] for o in outputs])
        self.threshold = best_threshold(target, prob)
        m = classification_metrics(target, prob, self.threshold)
        classes = sorted({int(t) for t in target.reshape(-1)})
        if len(classes) < 2 and not getattr(self, "_one_class_noted", False):
            self._one_class_noted = True
            self.print(f"validation visits of fold {self.fold} hold only {self.target}={classes[0] if classes else '-'}"
                       f": AUROC is undefined (nan) here; the best checkpoint follows val_loss")
        self._last_val = {"metrics": m, "threshold": self.threshold, "n": int(len(target))}
        return {"val_loss": float(np.mean([o["loss"] for o in outputs])), "val_AUROC": m["AUROC"],
                "val_balanced_accuracy": m["balanced_accuracy"]}

    # ------------------------------------------------------------------ checkpoints / end
    def checkpoint_extra(self) -> dict:
        return {"stamp_config": self.stamp_config.to_dict() if self.stamp_config else None,
                "target": self.target, "horizon_days": self.horizon, "threshold": float(self.threshold),
                "probe_heads": int(unwrap(self.network).probe.heads) if self.network is not None else None,
                "prior_samples": self.opts.prior_samples,
                "use_latent": bool(unwrap(self.network).use_latent) if self.network is not None else True,
                "encoder": self.encoder or "random"}

    def load_checkpoint_extra(self, extra: dict) -> None:
        self.threshold = float(extra.get("threshold", 0.5))

    def final_validation(self) -> None:
        """Metrics on every validation visit (threshold chosen there) → validation/summary.json."""
        summary = {"trainer": self.trainer_name, "target": self.target, "horizon_days": self.horizon,
                   "threshold": float(self.threshold)}
        if self._last_val is not None:
            summary.update(self._last_val)
        save_json(summary, self.output_folder / "validation" / "summary.json")

    # ------------------------------------------------------------------ prediction
    @classmethod
    def add_prediction_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from longnet_stamp.predict import add_probe_arguments

        add_probe_arguments(parser)

    @classmethod
    def run_prediction(cls, model_folder, folds, input_folder, output_folder, args, device) -> None:
        """case, subject, horizon_days, probability, predicted_class → output_folder/predictions.csv."""
        from longnet_stamp.predict import predict_probe

        predict_probe(model_folder, folds, input_folder, output_folder, args, device)
