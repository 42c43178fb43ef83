"""`longnet_predict` for scan -> embedding trainers (`RepresentationTrainer`): embeddings of every input case,
a trajectory plot per subject, and whatever extra outputs the trainer writes (LEARNER's change predictions)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from longnet.errors import LongnetError
from longnet.inference.embeddings import plot_trajectories, save_embeddings
from longnet.inference.predictor import list_input_cases
from longnet.io.visits import read_visits_csv, subjects_for_cases

if TYPE_CHECKING:
    from longnet.io.model_folder import ModelFolder


def predict_embeddings(cls: type, model: "ModelFolder", folds: Sequence[str] | None, input_folder: Path,
                       output_folder: Path, args: argparse.Namespace, device: torch.device) -> None:
    """Every fold's trainer rebuilt from its checkpoint; the first fold embeds (folds embed into different
    spaces), all are handed to the trainer's `write_extra_predictions`."""
    model_folder, output_folder = model.path, Path(output_folder)
    if output_folder.resolve() == Path(input_folder).resolve():
        raise LongnetError("output folder must differ from the input folder", output_folder)
    checkpoints = model.checkpoint_paths(folds, getattr(args, "checkpoint", None))
    trainers = [cls.from_checkpoint(p, device) for p in checkpoints]
    for t in trainers:
        t.configure_prediction(args)
    cases = list_input_cases(input_folder, model.file_ending, model.num_channels)
    lead = trainers[0]
    inputs = [lead.raw_input(files) for _, files in cases]
    ids = [c for c, _ in cases]
    visits = read_visits_csv(getattr(args, "visits", None))
    subjects = subjects_for_cases(ids, getattr(args, "patients", None), visits)
    emb = lead.embed_inputs(inputs)
    subject_of = {c: s for s, cs in subjects.items() for c in cs}
    columns = {"subject": [subject_of.get(c, "") for c in ids],
               "days": [visits.get(c, {}).get("days", "") for c in ids]}
    output_folder.mkdir(parents=True, exist_ok=True)
    save_embeddings(ids, emb, output_folder, columns)
    if len(trainers) > 1:
        print(f"{cls.__name__}: embeddings from fold {trainers[0].fold} (folds embed into different spaces)")
    # the folders above the model tell runs of one trainer apart (e.g. a trained and a baseline arm)
    where = "/".join(model_folder.resolve().parts[-3:-1])
    setup = f"{model.plans_name}, {model.configuration()}" if model.plans_name else model_folder.name
    plot_trajectories(dict(zip(ids, emb)), subjects, output_folder / "trajectories.png",
                      title=f"{cls.__name__}: {lead.embedding_description()} of {len(ids)} scans\n"
                            f"model {where} ({setup}, fold {lead.fold})")
    cls.write_extra_predictions(trainers, ids, inputs, subjects, visits, output_folder, args)
    print(f"{cls.__name__}: embedded {len(ids)} case(s) into {output_folder}")
