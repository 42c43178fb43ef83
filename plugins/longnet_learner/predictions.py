"""`change_predictions.csv` of LEARNER's change classifier: one row per pair of consecutive visits.

Columns: case (the later visit; it names the pair), case_from, subject, prob_0..prob_2 (improve, stable,
worsen; mean over folds), predicted_class, predicted; with a visits CSV holding the score also score_change,
target_class and target (for reading the file; `longnet_evaluate` recomputes targets from the references).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from longnet.api import CHANGE_CLASSES, atomic_path, change_class


@torch.no_grad()
def change_probabilities(trainers: list, inputs: list[np.ndarray], pairs: list[tuple[int, int]]) -> np.ndarray:
    """P×3 class probabilities of (earlier, later) index pairs, averaged over the folds' models."""
    probs = []
    for t in trainers:
        u = torch.from_numpy(t.embed_inputs(inputs)).to(t.device)
        d = torch.stack([u[b] - u[a] for a, b in pairs]) if pairs else u[:0]
        probs.append(torch.softmax(t.network.classify(d).float(), 1).cpu().numpy())
    return np.mean(probs, axis=0)


def write_change_predictions(trainers: list, cases: list[str], inputs: list[np.ndarray],
                             subjects: dict[str, list[str]], visits: dict[str, dict], output_folder: Path) -> Path:
    pos = {c: i for i, c in enumerate(cases)}
    rows = [(s, a, b) for s, cs in subjects.items() for a, b in zip(cs[:-1], cs[1:])]
    probs = change_probabilities(trainers, inputs, [(pos[a], pos[b]) for _, a, b in rows])
    lead = trainers[0]
    column = lead.score_column
    header = ["case", "case_from", "subject", *(f"prob_{k}" for k in range(len(CHANGE_CLASSES))),
              "predicted_class", "predicted", "score_change", "target_class", "target"]
    dest = output_folder / "change_predictions.csv"
    with atomic_path(dest, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for (subject, a, b), p in zip(rows, probs):
                k = int(np.argmax(p))
                sa, sb = visits.get(a, {}).get(column), visits.get(b, {}).get(column)
                extra = ["", "", ""]
                if isinstance(sa, float) and isinstance(sb, float):
                    t = change_class(sb - sa, lead.delta, lead.higher_is_healthier)
                    extra = [f"{sb - sa:.4f}", t, CHANGE_CLASSES[t]]
                w.writerow([b, a, subject, *(f"{x:.6f}" for x in p), k, CHANGE_CLASSES[k], *extra])
    if not rows:
        print("LEARNERChangeTrainer: no subject has two visits among the inputs (give --patients): "
              "change_predictions.csv has no rows")
    return dest
