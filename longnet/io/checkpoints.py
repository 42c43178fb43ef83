"""Checkpoint files: atomic saves of plain data only, and loads that never unpickle code (`weights_only=True`).

Shared by training (save/resume), `--pretrained-weights` and inference, so every checkpoint longnet opens
goes through the same refusal path for corrupt, foreign or pickled-object files.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from longnet.errors import LongnetError
from longnet.utils.files import atomic_path

CHECKPOINT_FORMAT = "longnet-checkpoint-1"
_PLAIN_SCALARS = (str, int, float, bool, type(None), torch.Tensor, torch.device, torch.dtype, torch.Size)


def _check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Fail at save time (a bug) rather than at load time if something would need unpickling."""
    if isinstance(obj, _PLAIN_SCALARS):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)):
                raise TypeError(f"{where}: key {k!r} has type {type(k).__name__}; checkpoints hold plain keys only")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} has type {type(obj).__name__}; checkpoints hold tensors, dicts, lists, str and numbers "
                    f"only so that torch.load(weights_only=True) can read them")


def to_plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays (and tuples) in nested data into Python numbers, lists and tensors."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(state: dict, dest: str | Path) -> None:
    """Write `state` atomically (temp file + rename): a kill during the save leaves the old file intact."""
    state = dict(state)
    state.setdefault("format", CHECKPOINT_FORMAT)
    _check_plain(state)
    with atomic_path(dest, suffix=".pth") as tmp:
        torch.save(state, tmp)


def _numpy_number_globals() -> list:
    """What unpickling numpy numbers needs (nnU-Net's checkpoints log them): the scalar constructor and the numeric
    dtypes only. Object dtypes stay refused, so nothing but numbers can come out of these."""
    from numpy._core.multiarray import scalar

    numeric = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
               "float64")
    return [scalar, np.dtype] + [type(np.dtype(t)) for t in numeric]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("network_weights",)) -> dict:
    """Load a checkpoint without executing code; any problem becomes a LongnetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise LongnetError("checkpoint not found", path)
    try:
        with torch.serialization.safe_globals(_numpy_number_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        text = str(e)
        if "Unsupported global" in text or "GLOBAL " in text:
            what = text.split("GLOBAL ", 1)[1].split(" ", 1)[0] if "GLOBAL " in text else "an object"
            raise LongnetError(f"refusing to load: the checkpoint contains pickled objects ({what}) that are not "
                               "plain tensors/numbers (torch.load(weights_only=True) failed); it is not a longnet "
                               "checkpoint or comes from an untrusted source", path) from None
        raise LongnetError(f"cannot read checkpoint (corrupt, truncated or not a PyTorch file: "
                           f"{type(e).__name__})", path) from None
    if not isinstance(ckpt, dict):
        raise LongnetError(f"not a longnet checkpoint (top level is a {type(ckpt).__name__}, expected a dict)", path)
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise LongnetError(f"not a longnet checkpoint (missing {', '.join(missing)})", path)
    return ckpt


def trainer_from_init_args(cls: type, init_args: dict, device: str | torch.device = "cpu") -> Any:
    """A trainer of class `cls` as a checkpoint's `init_args` constructed it (no data, no network yet)."""
    ia = init_args
    return cls(ia["plans"], ia["configuration"], ia["fold"], ia["dataset_json"], device, ia.get("options"))


def strip_prefixes(state_dict: dict) -> dict:
    """Remove the `module.` (DDP) and `_orig_mod.` (torch.compile) wrappers from parameter names, however they
    are nested (a compiled submodule leaves `._orig_mod.` inside a name)."""
    out = {}
    for k, v in state_dict.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        out[k.replace("._orig_mod.", ".")] = v
    return out


def unwrap(module: nn.Module) -> nn.Module:
    """The plain network inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def load_pretrained_weights(network: nn.Module, path: str | Path, log: Callable[[str], None] = print,
                            exclude_prefixes: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Copy every tensor whose name and shape match from a checkpoint's weights; report what was skipped.

    Used for fine-tuning from a pretraining run (e.g. a self-supervised plugin) whose heads differ.
    Tensors under `exclude_prefixes` keep their fresh initialisation (the trainer's choice, logged).
    """
    ckpt = load_checkpoint(path)
    source = strip_prefixes(ckpt["network_weights"])
    target = unwrap(network).state_dict()
    loaded, skipped = [], []
    new_state = {}
    for k, v in target.items():
        src = source.get(k)
        if k.startswith(tuple(exclude_prefixes)):
            skipped.append(f"{k} (kept freshly initialised by the trainer)")
        elif src is None:
            skipped.append(f"{k} (not in checkpoint)")
        elif not isinstance(src, torch.Tensor) or tuple(src.shape) != tuple(v.shape):
            shape = tuple(src.shape) if isinstance(src, torch.Tensor) else type(src).__name__
            skipped.append(f"{k} (shape {shape} in checkpoint, {tuple(v.shape)} in network)")
        else:
            new_state[k] = src.to(dtype=v.dtype)
            loaded.append(k)
    unused = sorted(set(source) - set(target))
    if not loaded:
        raise LongnetError("no tensor of the checkpoint matches the network by name and shape "
                           "(is it from a different architecture?)", path)
    unwrap(network).load_state_dict(new_state, strict=False)
    log(f"pretrained weights {path}: loaded {len(loaded)}/{len(target)} tensors, skipped {len(skipped)}"
        + (f", {len(unused)} checkpoint tensors unused" if unused else ""))
    for s in skipped:
        log(f"  skipped {s}")
    return loaded, skipped


def get_rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors/numbers, so a resume continues identically."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_cached_gaussian": float(cached),
        "python_version": int(version), "python_state": torch.tensor(pystate, dtype=torch.int64),
        "python_gauss_next": gauss_next,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of get_rng_state (missing entries are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy_keys" in state:
        np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                             state["numpy_has_gauss"], state["numpy_cached_gaussian"]))
    if "python_state" in state:
        random.setstate((state["python_version"], tuple(int(x) for x in state["python_state"].tolist()),
                         state["python_gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        except (RuntimeError, IndexError):
            pass  # different number of GPUs: CUDA streams restart from the seed
