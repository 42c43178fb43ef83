"""`Predictor`: a trained model (longnet's or nnU-Net v2's model folder) applied to raw images.

Preprocessing of the next case and export of finished ones run in background threads, so the network
(the expensive part) never waits for file IO or resampling.
"""
from __future__ import annotations

import re
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from longnet.dataset.labels import LabelManager
from longnet.dataset.raw import missing_channels, validate_case_id
from longnet.errors import LongnetError
from longnet.inference.export import export_prediction, segmentation_on_device
from longnet.inference.sliding_window import predict_sliding_window
from longnet.planning.network import (architecture_with_overrides, build_network_from_architecture,
                                     checkpoint_arch_overrides)
from longnet.planning.plans import Plans
from longnet.data.cascade import append_previous_stage, cascade_labels
from longnet.io.checkpoints import strip_prefixes
from longnet.utils.files import remove_stale_temp_files

_WEIGHT_KEYS = ("network_weights", "network_state_dict", "state_dict", "network", "model")


def network_weights_from_checkpoint(ckpt: Any, source: str | Path) -> dict:
    """The network's state dict inside a checkpoint (nnU-Net's `network_weights` or longnet's key)."""
    if isinstance(ckpt, dict):
        for key in _WEIGHT_KEYS:
            if isinstance(ckpt.get(key), dict):
                return strip_prefixes(ckpt[key])
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return strip_prefixes(ckpt)
    raise LongnetError(f"checkpoint holds no network weights (looked for {', '.join(_WEIGHT_KEYS)})", source)


def load_weights_into(network: nn.Module, weights: dict, source: str | Path) -> None:
    """Strict load with a readable error instead of torch's wall of key names."""
    own = network.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} (e.g. {', '.join(keys[:3])})")
        raise LongnetError("checkpoint does not match the network built from plans.json: " + "; ".join(parts), source)
    network.load_state_dict(weights, strict=True)


def _device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LongnetError("-device cuda requested but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LongnetError("-device mps requested but MPS is not available")
    return device


def list_input_cases(folder: str | Path, file_ending: str, num_channels: int) -> list[tuple[str, list[Path]]]:
    """Cases of an nnU-Net style input folder (`{case}_{CCCC}{ending}`), every channel present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LongnetError("input folder not found", folder)
    pat = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = pat.match(p.name)
        if m and not p.name.startswith("."):
            found.setdefault(validate_case_id(m.group(1), p), {})[int(m.group(2))] = p
    if not found:
        raise LongnetError(f"no images named CASE_0000{file_ending} in the input folder", folder)
    cases = []
    for cid, chans in sorted(found.items()):
        missing = missing_channels(chans, num_channels, file_ending)  # one RGB file holds 3 channels
        if missing:
            names = ", ".join(f"{cid}_{c:04d}{file_ending}" for c in missing)
            raise LongnetError(f"case {cid!r} lacks channel(s) {missing}: missing file(s) {names} (the model "
                               f"expects {num_channels} channel file(s) per case)", folder)
        cases.append((cid, [chans[c] for c in sorted(chans) if c < num_channels]))
    return cases


class Predictor:
    """Sliding-window inference with mirroring TTA and fold ensembling (logits averaged), nnU-Net-faithful."""

    def __init__(self, network: nn.Module, plans: Plans, configuration: str, dataset_json: dict,
                 parameters: Sequence[dict] | None = None, mirror_axes: Sequence[int] | None = None,
                 device: str | torch.device = "cpu", step_size: float = 0.5, use_mirroring: bool = True,
                 use_gaussian: bool = True, tile_batch_size: int | None = None,
                 accumulate_dtype: torch.dtype = torch.float16, trainer_name: str | None = None,
                 model_folder: str | Path | None = None, verbose: bool = False,
                 segment_on_device: bool | None = None, keep_sums_on_host: bool = False):
        self.device = _device(device)
        self.network = network.to(self.device)  # eval() only while predicting: a trainer keeps its mode
        self.plans = plans
        self.configuration_name = configuration
        self.configuration = plans.configuration(configuration)
        self.dataset_json = dataset_json
        self.label_manager = LabelManager.from_dataset_json(dataset_json)
        self.parameters = list(parameters) if parameters else []
        if len(self.parameters) == 1:
            self.network.load_state_dict(self.parameters[0])
        self.mirror_axes = tuple(mirror_axes) if (use_mirroring and mirror_axes) else None
        self.step_size = step_size
        self.use_gaussian = use_gaussian
        self.tile_batch_size = tile_batch_size  # None: from a voxel budget (sliding_window)
        self.accumulate_dtype = accumulate_dtype
        self.trainer_name = trainer_name
        self.model_folder = Path(model_folder) if model_folder else None
        self.verbose = verbose
        # resampling + argmax where the logits are (default on CUDA): the export worker gets a small label map
        self.segment_on_device = self.device.type == "cuda" if segment_on_device is None else segment_on_device
        # nnU-Net's --not_on_device: tile sums in host memory (and the export from there)
        self.keep_sums_on_host = keep_sums_on_host
        if keep_sums_on_host:
            self.segment_on_device = False

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_model_folder(cls, folder: str | Path, folds: Iterable[int | str] | None = None,
                          checkpoint_name: str = "checkpoint_final.pth", device: str | torch.device = "cpu",
                          trainer_cls: type | None = None, **kwargs) -> "Predictor":
        """Load `folder/{plans,dataset}.json` and `fold_N/<checkpoint_name>` (longnet or nnU-Net v2).

        With `trainer_cls` and a longnet checkpoint the network comes from the trainer class
        (`build_inference_network`), so a trainer that changes the architecture predicts with its own network;
        otherwise (nnU-Net's model folders) from the plans and the overrides recorded in the checkpoint."""
        from longnet.io.model_folder import ModelFolder

        model = ModelFolder(folder)
        folder = model.path
        plans = Plans(model.plans, folder / "plans.json")
        dataset_json = model.dataset_json
        checkpoints = [(p, model.load_checkpoint(p)) for p in model.checkpoint_paths(
            None if folds is None else [str(f) for f in folds], checkpoint_name)]
        first_path, first = checkpoints[0]
        configuration = model.configuration(first)
        if configuration not in plans.available_configurations:
            raise LongnetError(f"cannot tell the configuration of this model folder ({configuration!r} is not in "
                               "plans.json; expected a folder named TRAINER__PLANS__CONFIG)", folder)
        conf = plans.configuration(configuration)
        lm = LabelManager.from_dataset_json(dataset_json, str(folder / "dataset.json"))
        trainer_name = first.get("trainer_name") or model.trainer_name
        init_args = first.get("init_args")
        if trainer_cls is not None and isinstance(init_args, dict) and "plans" in init_args:
            from longnet.io.checkpoints import trainer_from_init_args

            network = trainer_from_init_args(trainer_cls, init_args).build_inference_network()
        else:
            channels = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
            n_inputs = len(channels) + len(cascade_labels(conf, lm))  # a cascade also sees the previous stage
            overrides = checkpoint_arch_overrides(first, trainer_name, conf.architecture)  # e.g. nnUNetTrainerBN
            try:
                network = build_network_from_architecture(architecture_with_overrides(conf.architecture, overrides),
                                                          n_inputs, lm.num_segmentation_heads,
                                                          deep_supervision=False)
            except LongnetError as e:  # e.g. a class outside the allow-list: name the file it came from
                raise LongnetError(e.message, e.path or (first_path if overrides else folder / "plans.json")) from None
        params = []
        for path, ck in checkpoints:
            weights = network_weights_from_checkpoint(ck, path)
            load_weights_into(network, weights, path)  # validates every fold's weights up front
            params.append(weights)
        mirror_axes = first.get("inference_allowed_mirroring_axes", tuple(range(len(conf.patch_size))))
        return cls(network, plans, configuration, dataset_json, params, mirror_axes, device,
                   trainer_name=trainer_name, model_folder=folder, **kwargs)

    @classmethod
    def from_trainer(cls, trainer: Any, **kwargs) -> "Predictor":
        """Wrap a trainer's live network (validation at the end of training): uses `trainer.network`,
        `.plans`, `.configuration_name`, `.dataset_json`, `.inference_allowed_mirroring_axes`, `.device`."""
        network = getattr(trainer, "network", None)
        if network is None:
            raise TypeError("trainer has no `network`")
        from longnet.io.checkpoints import unwrap

        network = unwrap(network)  # DDP / torch.compile wrappers: eager avoids recompiling for new batch shapes
        plans = trainer.plans if isinstance(trainer.plans, Plans) else Plans(trainer.plans)
        configuration = getattr(trainer, "configuration_name", None) or getattr(trainer, "configuration")
        if not isinstance(configuration, str):
            configuration = configuration.name
        kwargs.setdefault("device", getattr(trainer, "device", "cpu"))
        kwargs.setdefault("mirror_axes", getattr(trainer, "inference_allowed_mirroring_axes",
                                                 tuple(range(len(plans.configuration(configuration).patch_size)))))
        kwargs.setdefault("trainer_name", type(trainer).__name__)
        return cls(network, plans, configuration, trainer.dataset_json, **kwargs)

    # -- prediction -----------------------------------------------------------------------------------
    def _sliding_window(self, data: torch.Tensor, results_device: torch.device) -> torch.Tensor:
        return predict_sliding_window(self.network, data, self.configuration.patch_size,
                                      self.label_manager.num_segmentation_heads, self.step_size, self.mirror_axes,
                                      self.use_gaussian, self.device, self.tile_batch_size, self.accumulate_dtype,
                                      results_device)

    @torch.inference_mode()
    def predict_preprocessed(self, data: np.ndarray | torch.Tensor, keep_on_device: bool = False) -> torch.Tensor:
        """Logits (float32, CPU unless `keep_on_device`) of one preprocessed C×Z×Y×X case, averaged over folds
        (nnU-Net averages logits, not probabilities)."""
        x = torch.as_tensor(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).float()
        sets = self.parameters if len(self.parameters) > 1 else [None]
        total = None
        was_training = self.network.training
        self.network.eval()
        try:
            for params in sets:
                if params is not None:
                    self.network.load_state_dict(params)
                try:
                    out = self._sliding_window(x, torch.device("cpu") if self.keep_sums_on_host else self.device)
                except torch.cuda.OutOfMemoryError:  # large case: keep the sums in host memory instead
                    torch.cuda.empty_cache()
                    out = self._sliding_window(x, torch.device("cpu"))
                out = out.float() if keep_on_device else out.float().cpu()
                total = out if total is None else total.add_(out.to(total.device))
        finally:
            self.network.train(was_training)
        if len(sets) > 1:
            total /= len(sets)
        return total

    @property
    def input_dimension(self) -> int | None:
        """2 or 3: the dimension of the images this model takes (None if its plans do not tell)."""
        from longnet.inference.input_checks import model_image_dimension

        return model_image_dimension(self.plans, self.configuration_name)

    @property
    def previous_stage(self) -> str | None:
        """The configuration whose predictions a cascade needs (`-prev_stage_predictions`), else None."""
        return self.configuration.previous_stage

    def preprocess_case_files(self, case_id: str, files: Sequence[str | Path],
                              previous_stage_folder: str | Path | None = None) -> tuple[np.ndarray, dict]:
        """`preprocess`, plus for a cascade the previous stage's prediction `{case}{ending}` from
        `previous_stage_folder`, preprocessed like a label map and appended as one-hot channels."""
        if not self.previous_stage:
            return self.preprocess(files)
        if previous_stage_folder is None:
            raise LongnetError(f"configuration {self.configuration_name} is a cascade stage: give the predictions of "
                               f"{self.previous_stage} with -prev_stage_predictions DIR")
        ending = self.dataset_json.get("file_ending", ".nii.gz")
        seg_file = Path(previous_stage_folder) / f"{case_id}{ending}"
        if not seg_file.is_file():
            raise LongnetError(f"no {self.previous_stage} prediction for case {case_id!r} "
                               f"(expected {seg_file.name})", previous_stage_folder)
        return self.preprocess(files, seg_file)

    def preprocess(self, files: Sequence[str | Path], previous_stage_file: str | Path | None = None
                   ) -> tuple[np.ndarray, dict]:
        """Read and preprocess one case exactly as training data was preprocessed."""
        from longnet.dataset.reader_choice import check_channel_count, reader_writer_for_plans
        from longnet.fingerprint.extractor import check_finite
        from longnet.preprocessing.preprocessor import preprocess_case

        # the class the plans name, refusing images of another dimension than the model's
        data, props = reader_writer_for_plans(self.plans).read_images(files, self.input_dimension)
        n_channels = len(self.dataset_json.get("channel_names") or self.dataset_json.get("modality") or {})
        if n_channels:
            check_channel_count(data.shape[0], files, n_channels)
        check_finite(data, files, raw_bytes=True)  # as for training data: SimpleITK would read NaN as 0
        prev = None
        if previous_stage_file is not None:  # like a ground truth: transposed, cropped (-1 outside), resampled
            prev, _ = reader_writer_for_plans(self.plans).read_seg(previous_stage_file)
            if tuple(prev.shape[1:]) != tuple(data.shape[1:]):
                raise LongnetError(f"previous-stage prediction has shape {tuple(prev.shape[1:])[::-1]} but the image "
                                   f"{tuple(data.shape[1:])[::-1]}", previous_stage_file)
        data, prev, props = preprocess_case(data, prev, props, self.plans, self.configuration_name, self.dataset_json)
        props.pop("class_locations", None)
        if previous_stage_file is not None:
            data = append_previous_stage(data, prev, cascade_labels(self.configuration, self.label_manager))
        return data, props

    def predict_files(self, cases: Sequence[tuple[str, Sequence[str | Path]]], out_dir: str | Path,
                      save_probabilities: bool = False, continue_prediction: bool = False,
                      num_export_workers: int = 2, file_ending: str | None = None,
                      previous_stage_folder: str | Path | None = None, num_preprocessing_workers: int = 1,
                      progress_bar: bool = False) -> list[Path]:
        """Predict `[(case_id, [channel files])]` into `out_dir/{case}{ending}`; returns the files written.

        With `continue_prediction`, cases whose output exists are skipped (outputs are written atomically, so
        an existing file is complete). Every input's header and dimension is checked before anything is written;
        `out_dir` is created once the first case has been read, and dataset.json/plans.json are written at the
        end, so a case that fails midway leaves only complete predictions behind."""
        from longnet.dataset.reader_choice import reader_writer_for_plans
        from longnet.inference.input_checks import check_prediction_inputs

        out_dir = Path(out_dir)
        if out_dir.is_dir():
            remove_stale_temp_files(out_dir)
        ending = file_ending or self.dataset_json.get("file_ending", ".nii.gz")
        todo = []
        for cid, files in cases:
            validate_case_id(cid)
            dest = out_dir / f"{cid}{ending}"
            done = dest.is_file() and (not save_probabilities or (out_dir / f"{cid}.npz").is_file())
            if continue_prediction and done:
                continue
            todo.append((cid, list(files), dest))
        check_prediction_inputs(reader_writer_for_plans(self.plans), [(cid, files) for cid, files, _ in todo],
                                self.input_dimension, self.configuration_name)
        if len(todo) < len(cases):
            self._log(f"skipping {len(cases) - len(todo)} case(s) already predicted")
        written: list[Path] = []
        pending: deque[Future] = deque()
        max_pending = max(1, num_export_workers) * 2
        lookahead = max(2, num_preprocessing_workers)
        bar = tqdm(total=len(todo), desc="predict", unit="case", disable=not progress_bar or not sys.stderr.isatty())
        with ThreadPoolExecutor(max(1, num_preprocessing_workers), thread_name_prefix="longnet-pre") as pre_pool, \
                ThreadPoolExecutor(max(1, num_export_workers), thread_name_prefix="longnet-export") as exp_pool:
            def prepare(item):
                return self.preprocess_case_files(item[0], item[1], previous_stage_folder)

            ahead = deque(pre_pool.submit(prepare, item) for item in todo[:lookahead])
            for i, (cid, _, dest) in enumerate(todo):
                t0 = time.perf_counter()
                data, props = ahead.popleft().result()
                out_dir.mkdir(parents=True, exist_ok=True)  # first case read: there will be an output
                if i + lookahead < len(todo):
                    ahead.append(pre_pool.submit(prepare, todo[i + lookahead]))
                on_device = self.segment_on_device and not save_probabilities
                logits = self.predict_preprocessed(data, keep_on_device=on_device)
                if self.accumulate_dtype == torch.float16:  # nnU-Net exports float16 logits (export.py rounds alike)
                    logits = logits.half()
                seg = None
                if on_device:
                    seg = segmentation_on_device(logits, props, self.plans, self.configuration, self.label_manager)
                    logits = logits.cpu() if seg is None else None
                while len(pending) >= max_pending:
                    written.append(pending.popleft().result())
                pending.append(exp_pool.submit(export_prediction, logits, props, self.plans, self.configuration,
                                               self.label_manager, dest, save_probabilities, seg))
                self._log(f"{cid}: predicted in {time.perf_counter() - t0:.1f} s ({i + 1}/{len(todo)})")
                bar.update(1)
            while pending:
                written.append(pending.popleft().result())
        bar.close()
        out_dir.mkdir(parents=True, exist_ok=True)
        self._write_model_info(out_dir)
        return written

    def _write_model_info(self, out_dir: Path) -> None:
        # nnU-Net leaves dataset.json and plans.json next to its predictions; longnet_evaluate can use them.
        from longnet.utils.files import save_json

        save_json(self.dataset_json, out_dir / "dataset.json")
        save_json(self.plans.plans, out_dir / "plans.json")

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)
