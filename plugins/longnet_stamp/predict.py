"""Prediction for the STAMP trainers (the `run_prediction` contract of `longnet_predict`).

Raw images are preprocessed with `preprocess_case` and the plans exactly as in training, centre-cropped to the
ViT input, and then
- probe models: P(target) at the horizon, averaged over folds and prior samples of z → `predictions.csv`
  (case, subject, horizon_days, probability, predicted_class); the class uses the mean of the folds' thresholds
  (each chosen on its validation split by balanced accuracy);
- pretrained STAMP / Siamese-MAE models: the encoder's CLS token of each scan (no Δt, nothing masked) →
  `embeddings.npz` / `.csv` and `trajectories.png`.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from longnet.api import LongnetError, ModelFolder, Plans, atomic_path, load_checkpoint, strip_prefixes
from longnet_stamp.config import STAMPConfig
from longnet_stamp.data import center_crop
from longnet_stamp.model import STAMPNet
from longnet_stamp.probe_net import STAMPProbeNet


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--horizon-days", dest="horizon_days", type=float, default=None,
                        help="STAMP probe: prediction horizon (default: the one the probe was trained for)")
    parser.add_argument("--prior-samples", dest="prior_samples", type=int, default=None,
                        help="STAMP probe: z samples from the prior averaged per scan (default: as in training)")
    parser.add_argument("--prior-seed", dest="prior_seed", type=int, default=0,
                        help="STAMP probe: seed of the prior samples (default 0)")


def add_embedding_arguments(parser: argparse.ArgumentParser) -> None:
    """Pretrained STAMP models export CLS embeddings; they take no extra options."""


def _config(ckpt: dict, path: Path) -> STAMPConfig:
    cfg = (ckpt.get("extra") or {}).get("stamp_config")
    if not cfg:
        raise LongnetError("checkpoint has no extra.stamp_config (not written by a STAMP trainer)", path)
    return STAMPConfig.from_dict(cfg)


def _load(net: torch.nn.Module, ckpt: dict, path: Path, device: torch.device) -> torch.nn.Module:
    try:
        net.load_state_dict(strip_prefixes(ckpt["network_weights"]))
    except RuntimeError as e:
        raise LongnetError(f"checkpoint weights do not match the STAMP network ({str(e).splitlines()[0]})",
                           path) from None
    return net.to(device).eval()


class _Inputs:
    """Raw case files → preprocessed, centre-cropped network inputs (the training preprocessing)."""

    def __init__(self, model: ModelFolder, ckpt: dict, size: Sequence[int]):
        self.plans = Plans(model.plans)
        self.dataset_json = model.dataset_json
        self.configuration = model.configuration(ckpt)
        self.size = list(size)

    def cases(self, input_folder: Path) -> list[tuple[str, list[Path]]]:
        from longnet.api import list_input_cases

        dj = self.dataset_json
        n = len(dj.get("channel_names") or dj.get("modality") or {"0": ""})
        return list_input_cases(input_folder, dj.get("file_ending", ".nii.gz"), n)

    def __call__(self, files: Sequence[Path]) -> np.ndarray:
        from longnet.api import read_image_files
        from longnet.api import preprocess_case

        data, props = read_image_files(files)
        data, _, _ = preprocess_case(data, None, props, self.plans, self.configuration, self.dataset_json)
        return center_crop(data, self.size)


def _subjects(ids: list[str], args: argparse.Namespace) -> dict[str, list[str]]:
    from longnet.api import read_visits_csv, subjects_for_cases

    return subjects_for_cases(ids, getattr(args, "patients", None), read_visits_csv(getattr(args, "visits", None)))


def _check_output(input_folder: Path, output_folder: Path) -> None:
    if Path(output_folder).resolve() == Path(input_folder).resolve():
        raise LongnetError("output folder must differ from the input folder", output_folder)
    Path(output_folder).mkdir(parents=True, exist_ok=True)


def predict_probe(model: ModelFolder, folds: Sequence[str] | None, input_folder: Path, output_folder: Path,
                  args: argparse.Namespace, device: torch.device) -> Path:
    """Write output_folder/predictions.csv for every raw case of input_folder; returns its path."""
    output_folder, device = Path(output_folder), torch.device(device)
    if getattr(args, "prior_samples", None) is not None and args.prior_samples < 1:  # before the output folder
        raise LongnetError(f"--prior-samples must be an integer >= 1, got {args.prior_samples}")
    _check_output(input_folder, output_folder)
    models, thresholds, extras, ckpts = [], [], [], []
    for path in model.checkpoint_paths(folds, getattr(args, "checkpoint", None)):
        ckpt = load_checkpoint(path, map_location="cpu")
        ckpts.append(ckpt)
        extra = ckpt.get("extra") or {}
        if "target" not in extra:
            raise LongnetError("not a STAMPProbeTrainer checkpoint (no target in extra)", path)
        net = STAMPProbeNet(STAMPNet(_config(ckpt, path)), extra.get("probe_heads"), extra.get("use_latent", True))
        models.append(_load(net, ckpt, path, device))
        thresholds.append(float(extra.get("threshold", 0.5)))
        extras.append(extra)
    horizon = getattr(args, "horizon_days", None)
    horizon = float(extras[0]["horizon_days"] if horizon is None else horizon)
    samples = getattr(args, "prior_samples", None)
    samples = int(extras[0].get("prior_samples") or 1) if samples is None else samples
    threshold = float(np.mean(thresholds))
    inputs = _Inputs(model, ckpts[0], models[0].stamp.cfg.img_size)
    cases = inputs.cases(Path(input_folder))
    ids = [c for c, _ in cases]
    subject_of = {c: s for s, cs in _subjects(ids, args).items() for c in cs}
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(getattr(args, "prior_seed", 0) or 0))
    rows = []
    try:
        for case, files in cases:
            x = torch.from_numpy(inputs(files))[None].to(device)
            dt = torch.full((1,), horizon, device=device)
            prob = float(np.mean([float(m.predict_proba(x, dt, samples)[0]) for m in models]))
            rows.append([case, subject_of.get(case, case), f"{horizon:g}", f"{prob:.6f}", int(prob >= threshold)])
    finally:
        torch.random.set_rng_state(gen_state)
    dest = output_folder / "predictions.csv"
    with atomic_path(dest, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case", "subject", "horizon_days", "probability", "predicted_class"])
            w.writerows(rows)
    print(f"STAMPProbeTrainer: {len(rows)} prediction(s) of {extras[0]['target']!r} at {horizon:g} days "
          f"(threshold {threshold:.3f}, {len(models)} fold(s)) -> {dest}")
    return dest


@torch.no_grad()
def predict_embeddings(model: ModelFolder, folds: Sequence[str] | None, input_folder: Path, output_folder: Path,
                       args: argparse.Namespace, device: torch.device) -> Path:
    """CLS embeddings of the first fold's encoder → embeddings.npz/.csv + trajectories.png; returns the npz."""
    from longnet.api import plot_trajectories, save_embeddings

    model_folder, output_folder, device = model.path, Path(output_folder), torch.device(device)
    _check_output(input_folder, output_folder)
    path = model.checkpoint_paths(folds, getattr(args, "checkpoint", None))[0]
    ckpt = load_checkpoint(path, map_location="cpu")
    net = _load(STAMPNet(_config(ckpt, path)), ckpt, path, device)
    inputs = _Inputs(model, ckpt, net.cfg.img_size)
    cases = inputs.cases(Path(input_folder))
    ids = [c for c, _ in cases]
    emb = []
    for _, files in cases:
        h, _, _ = net.encoder(torch.from_numpy(inputs(files))[None].to(device))
        emb.append(h[0, 0].float().cpu().numpy())
    subjects = _subjects(ids, args)
    subject_of = {c: s for s, cs in subjects.items() for c in cs}
    npz, _ = save_embeddings(ids, np.stack(emb), output_folder, {"subject": [subject_of.get(c, c) for c in ids]})
    where = "/".join(model_folder.resolve().parts[-3:-1])  # tells runs of one trainer apart
    plot_trajectories(dict(zip(ids, emb)), subjects, output_folder / "trajectories.png",
                      title=f"STAMPTrainer: encoder CLS embeddings of {len(ids)} scans\n"
                            f"model {where}/{model_folder.name} ({path.parent.name})")
    print(f"STAMPTrainer: embedded {len(ids)} case(s) into {output_folder}")
    return npz
