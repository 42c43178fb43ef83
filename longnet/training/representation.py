"""`RepresentationTrainer`: base for trainers whose network turns one whole scan into an embedding vector
(ClinImCL, LEARNER). It adds what every such method needs on top of the generic loop:

- whole-scan inputs: a preprocessed case (C×Z×Y×X) resized to one fixed shape (`input_spec`, a picklable
  `VolumeInput` by default; `CaseInputs` caches prepared inputs per process, since the same scans are
  revisited every epoch);
- batched, no-grad embedding of many scans (`embed_inputs`);
- the prediction contract (`prediction_task = "embedding"`, carried out by
  `longnet.inference.embedding_prediction`): raw images → `preprocess_case` (exactly as in training) →
  embeddings → `embeddings.npz` + `embeddings.csv` + `trajectories.png`, with a hook for extra outputs
  (LEARNER's change predictions).

Plugins implement `build_network` (a module with `embed(x) -> N×D`), the loaders and the steps as usual.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from longnet.io.checkpoints import unwrap
from longnet.training.trainer import Trainer

if TYPE_CHECKING:
    from longnet.io.model_folder import ModelFolder


def normalise_volume(data: np.ndarray, mode: str) -> np.ndarray:
    """`minmax`: every channel of the volume scaled to [0, 1] (constant channel → 0); `none`: unchanged."""
    data = np.asarray(data, dtype=np.float32)
    if mode == "none":
        return data
    if mode != "minmax":
        raise ValueError(f"unknown input normalisation {mode!r}")
    out = np.empty_like(data)
    for c in range(data.shape[0]):
        lo, hi = float(data[c].min()), float(data[c].max())
        out[c] = (data[c] - lo) / (hi - lo) if hi > lo else 0.0
    return out


def resize_volume(data: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """C×(spatial) → C×shape with (bi/tri)linear interpolation; a no-op when the shape already matches."""
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape:
        return np.ascontiguousarray(data, dtype=np.float32)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    x = torch.as_tensor(np.array(data, dtype=np.float32))[None]  # a copy: cached inputs are read-only
    return F.interpolate(x, size=shape, mode=mode, align_corners=False)[0].numpy()


@dataclass(frozen=True)
class VolumeInput:
    """Whole scan → fixed-shape network input (normalise, then resize). A small picklable object, so loader
    worker processes prepare inputs themselves without a copy of the trainer."""

    shape: tuple[int, ...]
    normalisation: str = "none"

    def __call__(self, data: np.ndarray) -> np.ndarray:
        return resize_volume(normalise_volume(data, self.normalisation), self.shape)


class CaseInputs:
    """Prepared inputs of preprocessed cases, cached (read-only) in the process that uses them."""

    def __init__(self, index, prepare: Callable[[np.ndarray], np.ndarray], cache_bytes: int = 1 << 30):
        self.index, self.prepare, self.cache_bytes = index, prepare, int(cache_bytes)
        self._cache: dict[str, np.ndarray] = {}
        self._used = 0

    def get(self, case: str) -> np.ndarray:
        hit = self._cache.get(case)
        if hit is None:
            hit = np.ascontiguousarray(self.prepare(np.asarray(self.index.load(case)[0])), dtype=np.float32)
            hit.flags.writeable = False
            while self._cache and self._used + hit.nbytes > self.cache_bytes:
                self._used -= self._cache.pop(next(iter(self._cache))).nbytes
            self._cache[case] = hit
            self._used += hit.nbytes
        return hit

    def stack(self, cases: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.get(c) for c in cases]))


class RepresentationTrainer(Trainer):
    """Trainer of a scan → embedding network (see the module docstring)."""

    prediction_task: ClassVar[str] = "embedding"
    input_normalisation: ClassVar[str] = "none"
    num_val_iterations_per_epoch = 10
    input_cache_bytes: ClassVar[int] = 1 << 30  # per process; inputs are small after resizing

    # ----------------------------------------------------------------- hooks
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Spatial shape every scan is resized to."""
        raise NotImplementedError(f"{type(self).__name__} must define input_shape")

    def input_spec(self) -> Callable[[np.ndarray], np.ndarray]:
        """Picklable callable: preprocessed C×Z×Y×X case → the network's per-scan input."""
        return VolumeInput(tuple(self.input_shape), self.input_normalisation)

    def prepare_input(self, data: np.ndarray) -> np.ndarray:
        return self.input_spec()(data)

    def raw_input(self, files: Sequence[Path]) -> np.ndarray:
        """The network input of one raw case (its channel files): preprocessed exactly as in training, then
        prepared like the training inputs."""
        return self.prepare_input(_preprocess_raw(files, self))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Batch of prepared inputs → N×D embeddings (default: `network.embed`)."""
        return unwrap(self.network).embed(x)

    # ----------------------------------------------------------------- data helpers
    def longitudinal_index(self, cases: Sequence[str] | None):
        """`LongitudinalIndex` of this run's preprocessed data restricted to `cases` (no array cache: the
        prepared inputs are cached instead)."""
        from longnet.data.longitudinal import LongitudinalIndex

        return LongitudinalIndex(self.preprocessed_dataset_folder, self.configuration_manager.data_identifier,
                                 cases, cache_size=0)

    def case_inputs(self, index) -> CaseInputs:
        return CaseInputs(index, self.input_spec(), self.input_cache_bytes)

    @torch.no_grad()
    def embed_inputs(self, inputs: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """N×D float32 embeddings of prepared inputs, network in eval mode (its mode is restored after)."""
        net = unwrap(self.network)
        was_training = net.training
        net.eval()
        out = []
        try:
            for i in range(0, len(inputs), batch_size):
                x = torch.from_numpy(np.stack(inputs[i:i + batch_size])).to(self.device)
                out.append(self.embed(x).float().cpu().numpy())
        finally:
            net.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def final_validation(self) -> None:
        """`validation/summary.json`: embedding metrics (MCCD, within/between-subject distances, and the
        distance–score-change Spearman ρ when the trainer has a `score_column`) on the validation cases."""
        if not self.val_cases or self.prediction_task != "embedding":  # other tasks validate their own outputs
            return
        from longnet.evaluation.embedding import embedding_summary
        from longnet.utils.files import save_json

        index = self.longitudinal_index(self.val_cases)
        inputs = self.case_inputs(index)
        emb = dict(zip(index.cases, self.embed_inputs([inputs.get(c) for c in index.cases])))
        column = getattr(self, "score_column", None)
        scores = {c: index.meta(c).get(column) for c in index.cases} if column else None
        summary = {"task": "embedding", "split": "validation", "num_cases": len(emb),
                   **embedding_summary(emb, index.subjects, scores)}
        save_json(summary, self.output_folder / "validation" / "summary.json")

    # ----------------------------------------------------------------- prediction contract
    @classmethod
    def run_prediction(cls, model: ModelFolder, folds: Sequence[str] | None, input_folder: Path,
                       output_folder: Path, args: argparse.Namespace, device: torch.device) -> None:
        """Embed every raw case of `input_folder`; write embeddings.npz/.csv, trajectories.png (+ extras)."""
        from longnet.inference.embedding_prediction import predict_embeddings

        predict_embeddings(cls, model, folds, input_folder, output_folder, args, device)

    def configure_prediction(self, args: argparse.Namespace) -> None:
        """Hook: apply this trainer's prediction options (see `add_prediction_arguments`) to the loaded model."""

    def embedding_description(self) -> str:
        """Short name of what is exported (shown in the trajectory plot's title)."""
        return "embeddings"

    @classmethod
    def write_extra_predictions(cls, trainers: list["RepresentationTrainer"], cases: list[str],
                                inputs: list[np.ndarray], subjects: dict[str, list[str]], visits: dict[str, dict],
                                output_folder: Path, args: argparse.Namespace) -> None:
        """Hook: more outputs from the same prepared inputs (e.g. per-pair classifications)."""


def _preprocess_raw(files: Sequence[Path], trainer: Trainer) -> np.ndarray:
    from longnet.dataset.io import read_image_files
    from longnet.preprocessing.preprocessor import preprocess_case

    data, props = read_image_files(files)
    data, _, _ = preprocess_case(data, None, props, trainer.plans, trainer.configuration_name, trainer.dataset_json)
    return data
