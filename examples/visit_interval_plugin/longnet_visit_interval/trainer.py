"""`VisitIntervalTrainer`: predict the days between two scans of one subject, written only against longnet.api.

A shared 3D CNN encodes both scans; a head maps the pair to log(1 + days). Its output task `visit_interval`
writes `intervals.csv` (consecutive visits of each subject) and `longnet_evaluate --task visit_interval` scores it
against the visits CSV: mean absolute error in days and Spearman's rho.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet.api import (POSITIVE_FLOAT, POSITIVE_INT, LongnetError, OutputTask, Requirements, RepresentationTrainer,
                         atomic_path, list_input_cases, option, read_visits_csv, subjects_for_cases)


def write_intervals(rows: list[tuple[str, str, float]], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "intervals.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([("case_from", "case", "predicted_days")] + [(a, b, f"{d:.1f}") for a, b, d in rows])
    return folder / "intervals.csv"


def evaluate_intervals(args) -> dict:
    from scipy.stats import spearmanr

    gt = Path(args.gt) / "visitsTs.csv" if Path(args.gt).is_dir() else Path(args.gt)
    days = {c: v.get("days") for c, v in read_visits_csv(gt).items()}
    pred_file = Path(args.pred) / "intervals.csv" if Path(args.pred).is_dir() else Path(args.pred)
    if not pred_file.is_file():
        raise LongnetError("intervals.csv not found", pred_file)
    rows = [r for r in csv.DictReader(open(pred_file)) if days.get(r["case"]) is not None
            and days.get(r["case_from"]) is not None]
    if not rows:
        raise LongnetError("no predicted pair has days for both visits in the visits CSV", gt)
    true = [days[r["case"]] - days[r["case_from"]] for r in rows]
    pred = [float(r["predicted_days"]) for r in rows]
    return {"task": "visit_interval", "num_pairs": len(rows), "MAE_days": float(sum(
        abs(p - t) for p, t in zip(pred, true)) / len(rows)), "spearman": float(spearmanr(pred, true)[0])}


VISIT_INTERVAL = OutputTask("visit_interval", "days between consecutive visits of a subject", "intervals.csv",
                            evaluate_intervals, write=write_intervals)


class IntervalNet(nn.Module):
    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(*(m for i in range(3) for m in (
            nn.Conv3d(channels if i == 0 else width * 2 ** (i - 1), width * 2 ** i, 3, stride=2, padding=1),
            nn.InstanceNorm3d(width * 2 ** i, affine=True), nn.LeakyReLU())), nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * width, 32), nn.LeakyReLU(), nn.Linear(32, 1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # log(1 + days from a to b)
        return self.head((self.encoder(b) - self.encoder(a)).abs())[:, 0]


@dataclass(frozen=True)
class IntervalOptions:  # becomes --lr and --batch-size, with these defaults and ranges
    lr: float = option(1e-3, "Adam learning rate", range=POSITIVE_FLOAT)
    batch_size: int = option(4, "visit pairs per batch", range=POSITIVE_INT)


class VisitIntervalTrainer(RepresentationTrainer):
    """Days between two scans of one subject from the pair (shared 3D CNN encoder); task visit_interval."""

    options_class = IntervalOptions
    requirements = Requirements(min_visits_per_subject=2, required_columns=("days",))
    prediction_task = "visit_interval"
    input_shape = (32, 32, 32)
    num_epochs, num_iterations_per_epoch = 20, 25

    def build_network(self) -> nn.Module:
        return IntervalNet(self.num_input_channels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.network.parameters(), lr=self.opts.lr), None

    def train_loader(self):
        index = self.longitudinal_index(self.train_cases)
        inputs = self.case_inputs(index)
        pairs = [(a, b) for cs in index.subjects.values() for i, a in enumerate(cs) for b in cs[i + 1:]]

        def batch(rng):
            chosen = [pairs[i] for i in rng.integers(len(pairs), size=self.opts.batch_size)]
            return {"a": inputs.stack([a for a, _ in chosen]), "b": inputs.stack([b for _, b in chosen]),
                    "days": torch.tensor([index.days(b) - index.days(a) for a, b in chosen], dtype=torch.float32)}
        return self.make_batch_iterator(batch, num_workers=0)

    def training_step(self, batch: dict) -> dict:
        return {"loss": F.smooth_l1_loss(self.network(batch["a"], batch["b"]), torch.log1p(batch["days"]))}

    @classmethod
    def run_prediction(cls, model, folds, input_folder, output_folder, args, device) -> None:
        trainer = cls.from_checkpoint(model.checkpoint_paths(folds, args.checkpoint)[0], device)
        cases = dict(list_input_cases(input_folder, model.file_ending, model.num_channels))
        rows = []
        with torch.no_grad():
            for cs in subjects_for_cases(list(cases), args.patients, read_visits_csv(args.visits)).values():
                x = {c: torch.from_numpy(trainer.raw_input(cases[c]))[None].to(device) for c in cs}
                rows += [(a, b, float(torch.expm1(trainer.network(x[a], x[b]))[0])) for a, b in zip(cs, cs[1:])]
        print(f"{cls.__name__}: {len(rows)} interval(s) -> {write_intervals(rows, Path(output_folder))}")
