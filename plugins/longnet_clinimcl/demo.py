"""Demo recipe of ClinImCL: subject-level InfoNCE on the demo cohort, embeddings of the test split, and the
same prediction from a random-initialised encoder as the reference.

Reported: mean consecutive cosine distance within subjects (MCCD) relative to the mean distance between
subjects (lower = trajectories stay with their subject). `run_clinimcl` / `random_init_reference` are also
what bench/contrastive_demo.py repeats over seeds.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

PLANS, CONFIG = "nnUNetPlans", "3d_fullres"
MODEL = f"ClinImCLTrainer__{PLANS}__{CONFIG}"
ARGS = ["--preset", "tiny", "--cube", "32", "--batch-size", "8", "--lr", "1e-3"]


def _predict_and_evaluate(ctx, model_folder: Path, pred: Path) -> dict:
    from longnet.api import call_command

    raw = Path(ctx.raw_folder)
    call_command("predict", "main", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-m", str(model_folder), "-f",
                                     "all", "-device", ctx.device, "--patients", str(raw / "patientsTs.json"),
                                     "--visits", str(raw / "visitsTs.csv")])
    call_command("evaluate", "main", [str(raw), str(pred), "--task", "embedding", "--patients",
                                      str(raw / "patientsTs.json")])
    s = json.loads((pred / "summary.json").read_text())
    return {"MCCD": s["MCCD"], "between_subject_distance": s["between_subject_distance"],
            "ratio": s["MCCD_over_between"], "within_all_pairs": s["mean_within_subject_distance"],
            "num_subjects": s["num_subjects"], "predictions": str(pred)}


def run_clinimcl(ctx, seed: int = 12345, epochs: int | None = None, iters: int | None = None,
                 name: str = "ClinImCL") -> tuple[dict, Path]:
    """Train on every training subject (fold 'all'), embed the test split; returns (metrics, model folder)."""
    from longnet.api import call_command

    s = ctx.settings
    call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", "ClinImCLTrainer", *ARGS,
                                   "-device", ctx.device, "--seed", str(seed), "--epochs", str(epochs or s.epochs),
                                   "--iters-per-epoch", str(iters or s.iters_per_epoch)])
    import os

    folder = Path(os.environ["LONGNET_RESULTS"]) / ctx.dataset_name / MODEL
    return _predict_and_evaluate(ctx, folder, Path(ctx.out) / "predictions" / name), folder


def random_init_reference(ctx, seed: int = 12345, name: str = "ClinImCL_random_init") -> dict:
    """The baseline as a command: `longnet_train ... --random-init --output-name NAME` writes the seeded, untrained
    encoder as its own model folder, predicted and evaluated like the trained one."""
    import os

    from longnet.api import call_command

    call_command("train", "main", [str(ctx.dataset_id), CONFIG, "all", "-tr", "ClinImCLTrainer", *ARGS,
                                   "-device", ctx.device, "--seed", str(seed), "--random-init", "--output-name", name])
    folder = Path(os.environ["LONGNET_RESULTS"]) / ctx.dataset_name / name
    return _predict_and_evaluate(ctx, folder, Path(ctx.out) / "predictions" / name)


def run_demo(ctx):
    """Recipe row: MCCD / between-subject distance of the trained encoder vs a random-init encoder."""
    from longnet.api import RecipeResult

    trained, _ = run_clinimcl(ctx)
    random = random_init_reference(ctx)
    pictures = []
    for tag, r in (("trained", trained), ("random_init", random)):
        src = Path(r["predictions"]) / "trajectories.png"
        if src.is_file():
            dest = Path(ctx.pictures) / f"trajectories_ClinImCL_{tag}.png"
            shutil.copyfile(src, dest)
            pictures.append(dest)
    produced = (f"embeddings of {trained['num_subjects']} test subjects; MCCD {trained['MCCD']:.3g} vs between "
                f"{trained['between_subject_distance']:.3g}")
    return RecipeResult(produced, "MCCD / between-subject dist.", trained["ratio"], random["ratio"],
                        "random init", pictures, Path(trained["predictions"]))
