"""`LEARNERChangeTrainer`: stage 2 of LEARNER — classify each pair of consecutive visits as improve / stable /
worsen from d_t = u_{t+1} − u_t of a pretrained LEARNER encoder (`--encoder CKPT`, frozen by default).

Classes come from `--delta` on the score change (longnet.evaluation.change, shared with `longnet_evaluate`);
the loss is class-weighted cross-entropy (inverse class frequency of the training pairs). With a frozen
encoder every scan is embedded once and training runs on the cached d_t (identical result, much faster).
Prediction writes the embeddings (as the stage-1 trainer) plus `change_predictions.csv`.
"""
from __future__ import annotations

from dataclasses import dataclass
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from longnet.api import (CHANGE_CLASSES, CaseInputs, LongnetError, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT,
    RepresentationTrainer, Requirements, change_targets, consecutive_pairs, load_checkpoint, option, strip_prefixes,
    unwrap)

from longnet_learner.network import ChangeNet, EncoderConfig, build_encoder


class PairBatches:
    """Batches of consecutive-visit pairs with their change class: cached d_t (frozen encoder) or the two
    prepared scans (fine-tuning)."""

    def __init__(self, pairs: list[tuple[str, str, int]], batch_size: int, inputs: CaseInputs | None = None,
                 embeddings: dict[str, np.ndarray] | None = None):
        self.pairs, self.batch_size, self.inputs, self.embeddings = pairs, int(batch_size), inputs, embeddings

    def make_batch(self, rng: np.random.Generator) -> dict:
        return self.batch([self.pairs[int(i)] for i in rng.integers(len(self.pairs), size=self.batch_size)])

    def batch(self, sel: list[tuple[str, str, int]]) -> dict:
        out = {"target": torch.tensor([c for _, _, c in sel], dtype=torch.long)}
        if self.embeddings is not None:
            out["d"] = torch.from_numpy(np.stack([self.embeddings[b] - self.embeddings[a] for a, b, _ in sel]))
        else:
            out["x_t"] = self.inputs.stack([a for a, _, _ in sel])
            out["x_next"] = self.inputs.stack([b for _, b, _ in sel])
        return out

    def chunks(self) -> list[dict]:
        """Every pair once, in order (deterministic validation)."""
        return [self.batch(self.pairs[i:i + self.batch_size]) for i in range(0, len(self.pairs), self.batch_size)]


@dataclass(frozen=True)
class ChangeOptions:
    """LEARNERChangeTrainer's options (stage 2)."""

    encoder: str | None = option(None, "checkpoint of a LEARNERTrainer run (needed for training)")
    delta: float = option(2.0, "|Δscore| above which a pair counts as improved/worsened (MMSE points)",
                          range=NON_NEGATIVE_FLOAT)
    lower_is_healthier: bool = option(False, "sign convention: a falling score is an improvement (default: higher "
                                             "= healthier)")
    score: str | None = option(None, "score column (None: the encoder's --score)")
    finetune: bool = option(False, "train the encoder too (default: frozen)")
    hidden: int = option(128, "hidden units of the classifier", range=POSITIVE_INT)
    batch_size: int = option(16, "pairs per batch", range=POSITIVE_INT)
    lr: float = option(1e-4, "Adam learning rate", range=POSITIVE_FLOAT)
    no_class_weights: bool = option(False, "plain cross-entropy (default: weighted by inverse class frequency)")


class LEARNERChangeTrainer(RepresentationTrainer):
    """Stage-2 LEARNER: MLP(d_t) → (improve, stable, worsen)."""

    prediction_task = "classification"
    options_class = ChangeOptions
    best_metric = "val_macro_F1"
    best_metric_mode = "max"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._spec: dict | None = None
        self._spec_from_checkpoint = False
        self.class_weights: list[float] | None = None
        self.frozen = not self.opts.finetune
        self.delta = self.opts.delta
        self.higher_is_healthier = not self.opts.lower_is_healthier

    # ----------------------------------------------------------------- the pretrained encoder
    @property
    def spec(self) -> dict:
        """Encoder configuration and score column, read from --encoder (or restored from this trainer's
        own checkpoint, so prediction does not need the pretraining file)."""
        if self._spec is None:
            path = self.opts.encoder
            if not path:
                raise LongnetError("LEARNERChangeTrainer needs --encoder CKPT (a LEARNERTrainer checkpoint)")
            ckpt = load_checkpoint(path)
            opts = (ckpt.get("init_args") or {}).get("options") or {}
            encoder = (ckpt.get("extra") or {}).get("encoder")
            if not isinstance(encoder, dict):
                raise LongnetError("not a LEARNERTrainer checkpoint (it holds no encoder configuration)", path)
            self._spec = {"encoder": EncoderConfig.from_dict(encoder).to_dict(), "score": opts.get("score") or "score",
                          "encoder_checkpoint": str(Path(path).resolve()), "encoder_trainer": ckpt.get("trainer_name")}
        return self._spec

    @property
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig.from_dict(self.spec["encoder"])

    @property
    def score_column(self) -> str:
        return self.opts.score or str(self.spec["score"])

    def get_requirements(self) -> Requirements:
        return Requirements(min_visits_per_subject=2, min_subjects=1, some_columns=(self.score_column,))

    @property
    def input_shape(self) -> tuple[int, ...]:
        c = self.encoder_config
        return (c.frames, c.image_size, c.image_size)

    def input_spec(self):
        return self.encoder_config.input_spec()

    def embedding_description(self) -> str:
        return "LEARNER u (" + ("frozen" if self.frozen else "fine-tuned") + " encoder)"

    def build_network(self) -> torch.nn.Module:
        net = ChangeNet(build_encoder(self.encoder_config, self.num_input_channels),
                        self.opts.hidden)
        if not self._spec_from_checkpoint:
            path = self.spec["encoder_checkpoint"]
            weights = strip_prefixes(load_checkpoint(path)["network_weights"])
            enc = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
            try:
                net.encoder.load_state_dict(enc)
            except RuntimeError as e:
                raise LongnetError(f"encoder weights do not fit ({str(e).splitlines()[0]})", path) from None
        if self.frozen:
            for p in net.encoder.parameters():
                p.requires_grad_(False)
        return net

    def configure_optimizers(self):
        params = [p for p in self.network.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.opts.lr), None

    def on_epoch_start(self, epoch: int) -> None:
        if self.frozen:  # BatchNorm statistics of a frozen encoder stay those of pretraining
            unwrap(self.network).encoder.eval()

    # ----------------------------------------------------------------- data
    def labelled_pairs(self, index) -> list[tuple[str, str, int]]:
        scores = {c: index.meta(c).get(self.score_column) for c in index.cases}
        pairs = [(a, b) for _, a, b in consecutive_pairs(index.subjects, scores)]
        targets = change_targets(pairs, scores, self.delta, self.higher_is_healthier)
        return [(a, b, targets[(a, b)]) for a, b in pairs]

    def _pair_batches(self, cases: list[str]) -> PairBatches:
        index = self.longitudinal_index(cases)
        inputs = self.case_inputs(index)
        pairs = self.labelled_pairs(index)
        embeddings = None
        if self.frozen:
            used = sorted({c for a, b, _ in pairs for c in (a, b)})
            embeddings = dict(zip(used, self.embed_inputs([inputs.get(c) for c in used])))
        return PairBatches(pairs, self.opts.batch_size, inputs, embeddings)

    def train_loader(self):
        batches = self._pair_batches(self.train_cases)
        if not batches.pairs:
            raise LongnetError("no pair of consecutive scored visits in the training split")
        counts = np.bincount([c for _, _, c in batches.pairs], minlength=len(CHANGE_CLASSES))
        if self.opts.no_class_weights:
            weights = np.ones(len(counts))
        else:
            present = int((counts > 0).sum())
            weights = np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0)
        self.class_weights = [float(w) for w in weights]
        self.print("training pairs per class " + ", ".join(f"{n}: {k}" for n, k in zip(CHANGE_CLASSES, counts))
                   + "; class weights " + ", ".join(f"{w:.2f}" for w in weights))
        return self.make_batch_iterator(batches.make_batch, "train")

    def val_loader(self):
        if not self.val_cases:
            return None
        chunks = self._pair_batches(self.val_cases).chunks()
        if not chunks:
            self.print("no consecutive scored visit pair in the validation split: per-epoch validation disabled")
            return None
        if self.options.get("val_iters") is None:
            self.num_val_iterations_per_epoch = len(chunks)
        return itertools.cycle(chunks)

    # ----------------------------------------------------------------- steps
    def _logits(self, batch: dict) -> torch.Tensor:
        if "d" in batch:
            return self.network(batch["d"])
        return self.network(batch["x_t"], batch["x_next"])

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = torch.tensor(self.class_weights, device=logits.device) if self.class_weights else None
        return F.cross_entropy(logits.float(), target, weight=w)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self._ce(self._logits(batch), batch["target"])}

    def validation_step(self, batch: dict) -> dict:
        logits = self._logits(batch)
        return {"loss": float(self._ce(logits, batch["target"])), "target": batch["target"].cpu().numpy(),
                "prob": torch.softmax(logits.float(), 1).cpu().numpy()}

    def aggregate_validation(self, outputs: list[dict]) -> dict:
        from longnet.api import classification_metrics

        y = np.concatenate([o["target"] for o in outputs])
        p = np.concatenate([o["prob"] for o in outputs])
        m = classification_metrics(y, p)
        return {"val_loss": float(np.mean([o["loss"] for o in outputs])), "val_macro_F1": m["macro_F1"],
                "val_accuracy": m["accuracy"]}

    def final_validation(self) -> None:
        """`validation/summary.json`: classification metrics over every consecutive validation pair."""
        if not self.val_cases:
            return
        from longnet.api import save_json

        chunks = self._pair_batches(self.val_cases).chunks()
        if chunks:
            unwrap(self.network).eval()
            with torch.no_grad():
                outs = [self.validation_step(self.prepare_batch(c)) for c in chunks]
            save_json({"task": "classification", "split": "validation", "classes": list(CHANGE_CLASSES),
                       "delta": self.delta, **self.aggregate_validation(outs)},
                      self.output_folder / "validation" / "summary.json")

    def checkpoint_extra(self) -> dict:
        return {"spec": self.spec, "class_weights": self.class_weights, "delta": self.delta,
                "higher_is_healthier": self.higher_is_healthier}

    def load_checkpoint_extra(self, extra: dict) -> None:
        if extra.get("spec"):
            self._spec, self._spec_from_checkpoint = dict(extra["spec"]), True
        if extra.get("class_weights"):
            self.class_weights = list(extra["class_weights"])

    # ----------------------------------------------------------------- prediction
    @classmethod
    def write_extra_predictions(cls, trainers, cases, inputs, subjects, visits, output_folder: Path, args) -> None:
        from longnet_learner.predictions import write_change_predictions

        write_change_predictions(trainers, cases, inputs, subjects, visits, Path(output_folder))
