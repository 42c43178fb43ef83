"""`ClinImCLTrainer`: subject-level InfoNCE — two distinct visits of one subject are the
positive pair, the other subjects of the batch are negatives.

Honest sampling: a batch holds B *distinct* subjects with ≥ 2 visits (`SubjectBatchSampler`), and each
contributes two different visits, so no pair is a false positive (the original notebook's cross-subject
"positives") and no subject is its own negative. Splits are longnet's subject-level splits (the original
scan-level split leaks subjects). Inputs: each volume min–max scaled to [0, 1] per channel and resized to a
fixed cube. Output: an embedding per scan (z by default, h with `longnet_predict ... --embedding h`).
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from longnet.api import (NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, CaseInputs, LongnetError,
    OptionRange, RepresentationTrainer, Requirements, option)

from longnet_clinimcl.losses import info_nce
from longnet_clinimcl.network import PRESETS, ClinImCLNet

#: Validation draws are frozen with this seed, not the training seed: every run on a split sees the same ones.
VALIDATION_SEED = 12345


class VisitPairBatches:
    """B distinct subjects, two distinct visits each (their order is random; the loss is symmetric)."""

    def __init__(self, index, inputs: CaseInputs, batch_size: int):
        from longnet.api import SubjectBatchSampler

        self.index, self.inputs = index, inputs
        eligible = [s for s, cs in index.subjects.items() if len(cs) >= 2]
        self.batch_size = min(int(batch_size), len(eligible))
        self.sampler = SubjectBatchSampler(index, self.batch_size, min_visits=2) if self.batch_size >= 2 else None

    def two_visits(self, subject: str, rng: np.random.Generator) -> tuple[str, str]:
        cases = self.index.visits_of(subject)
        i, j = rng.choice(len(cases), size=2, replace=False)
        return cases[int(i)], cases[int(j)]

    def draw(self, rng: np.random.Generator) -> tuple[list[str], list[tuple[str, str]]]:
        """(subjects, [(visit, other visit) per subject])."""
        subjects = self.sampler.draw(rng)
        return subjects, [self.two_visits(s, rng) for s in subjects]

    def make_batch(self, rng: np.random.Generator) -> dict:
        return self.batch(*self.draw(rng))

    def batch(self, subjects: list[str], pairs: list[tuple[str, str]]) -> dict:
        return {"view_a": self.inputs.stack([a for a, _ in pairs]), "view_b": self.inputs.stack([b for _, b in pairs])}


@dataclass(frozen=True)
class ClinImCLOptions:
    """ClinImCLTrainer's options (None = the preset's value)."""

    preset: str = option("paper", "paper: 96³ input, widths 16-128, h 256, z 128, batch 8; tiny: 32³, widths 4-32, "
                                  "h 32, z 16, batch 4 (the options below override single values)",
                         choices=tuple(sorted(PRESETS)))
    cube: int | None = option(None, "edge of the cube every scan is resized to (at least 16)",
                              range=OptionRange(int, 16))
    widths: tuple | None = option(None, "encoder widths of the 4 stages", nargs=4, kind=int, range=POSITIVE_INT)
    h_dim: int | None = option(None, "representation size h", range=POSITIVE_INT)
    z_dim: int | None = option(None, "projection size z", range=POSITIVE_INT)
    batch_size: int | None = option(None, "distinct subjects per batch (B)", range=POSITIVE_INT)
    tau: float = option(0.07, "InfoNCE temperature", range=POSITIVE_FLOAT)
    one_directional: bool = option(False, "CE(S, I) only (the report's Eq. 1) instead of the symmetric form")
    lr: float = option(1e-4, "AdamW learning rate", range=POSITIVE_FLOAT)
    weight_decay: float = option(1e-4, "AdamW weight decay", range=NON_NEGATIVE_FLOAT)
    val_iters: int | None = option(None, "frozen validation batches per epoch (None: 10)", range=NON_NEGATIVE_INT)


class ClinImCLTrainer(RepresentationTrainer):
    """Contrastive pretraining of a 3D CNN encoder with subject-level InfoNCE."""

    requirements = Requirements(min_visits_per_subject=2, min_subjects=2)
    options_class = ClinImCLOptions
    input_normalisation = "minmax"
    num_epochs = 10
    num_iterations_per_epoch = 100
    best_metric = "val_loss"
    best_metric_mode = "min"

    @classmethod
    def add_prediction_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--embedding", choices=["z", "h"], default="z",
                            help="export the normalised projection z (default) or the representation h")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        preset = PRESETS[self.opts.preset]
        pick = lambda k: getattr(self.opts, k) if getattr(self.opts, k) is not None else preset[k]  # noqa: E731
        self.cube = int(pick("cube"))
        self.widths = tuple(int(w) for w in pick("widths"))
        self.h_dim, self.z_dim = int(pick("h_dim")), int(pick("z_dim"))
        self.batch_size = int(pick("batch_size"))
        self.tau = self.opts.tau
        self.symmetric = not self.opts.one_directional
        self.export = "z"
        if self.cube < 16:
            raise LongnetError(f"--cube must be at least 16 (4 poolings), got {self.cube}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.cube,) * 3

    def build_network(self) -> torch.nn.Module:
        return ClinImCLNet(self.num_input_channels, self.widths, self.h_dim, self.z_dim, self.export)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=self.opts.lr, weight_decay=self.opts.weight_decay)
        return opt, None  # no schedule (as the original)

    def configure_prediction(self, args: argparse.Namespace) -> None:
        self.export = getattr(args, "embedding", None) or "z"
        self.network.export = self.export

    def embedding_description(self) -> str:
        return f"ClinImCL {self.export}"

    # ----------------------------------------------------------------- data
    def _batches(self, cases: list[str]) -> VisitPairBatches:
        index = self.longitudinal_index(cases)
        return VisitPairBatches(index, self.case_inputs(index), self.batch_size)

    def train_loader(self):
        batches = self._batches(self.train_cases)
        if batches.sampler is None:
            raise LongnetError("ClinImCL needs at least two training subjects with two or more visits")
        if batches.batch_size < self.batch_size:
            self.print(f"batch size reduced to {batches.batch_size} (subjects with 2+ visits in the training split)")
        return self.make_batch_iterator(batches.make_batch, "train")

    def val_loader(self):
        from longnet.api import frozen_draws, frozen_draws_path

        if not self.val_cases or self.num_val_iterations_per_epoch <= 0:
            return None
        batches = self._batches(self.val_cases)
        if batches.sampler is None:
            self.print("fewer than two validation subjects with 2+ visits: per-epoch validation disabled")
            return None
        n = self.num_val_iterations_per_epoch
        path = frozen_draws_path(self.preprocessed_dataset_folder, f"ClinImCL_b{batches.batch_size}_n{n}", self.fold)
        fixed = []
        for i, subjects in enumerate(frozen_draws(batches.sampler, n, VALIDATION_SEED, path)):
            rng = np.random.default_rng([VALIDATION_SEED, i, 1])
            fixed.append(batches.batch(subjects, [batches.two_visits(s, rng) for s in subjects]))
        return itertools.cycle(fixed)

    # ----------------------------------------------------------------- steps
    def _loss(self, batch: dict) -> torch.Tensor:
        n = len(batch["view_a"])
        _, z = self.network(torch.cat([batch["view_a"], batch["view_b"]]))  # one pass: shared BN statistics
        return info_nce(z[:n], z[n:], self.tau, self.symmetric)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self._loss(batch)}

    def validation_step(self, batch: dict) -> dict:
        return {"loss": float(self._loss(batch))}
