"""Helpers shared by the CLI bad-input corpus and the kill/resume tests: environment roots, a tiny segmentation
model folder for longnet_predict, folder snapshots (to prove "no partial outputs") and message checks."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from longnet.planning.network import build_network_from_architecture
from longnet.io.checkpoints import save_checkpoint
from test_predict_export import tiny_plans

DATASET = "Dataset999_Test"  # make_raw_dataset's default name
MODEL = ("MyTrainer", "tinyPlans", "3d_fullres")  # an unregistered trainer name: plain segmentation prediction


def set_roots(monkeypatch, root: Path) -> dict[str, Path]:
    """root/{raw,pre,res} as LONGNET_RAW/PREPROCESSED/RESULTS; single-process loaders, no torch.compile."""
    out = {}
    for key, var in (("raw", "LONGNET_RAW"), ("pre", "LONGNET_PREPROCESSED"), ("res", "LONGNET_RESULTS")):
        out[key] = Path(root) / key
        out[key].mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(out[key]))
    monkeypatch.setenv("LONGNET_N_PROC_DA", "0")
    monkeypatch.setenv("LONGNET_COMPILE", "0")
    return out


def make_seg_model_folder(results_root: Path, n_channels: int = 1, dataset_name: str = DATASET,
                          plans_dataset: str | None = None, seed: int = 0) -> Path:
    """results_root/<dataset>/MyTrainer__tinyPlans__3d_fullres with one randomly initialised fold (patch 8³).

    `plans_dataset` writes another dataset's name into plans.json (the 'plans from another dataset' case)."""
    plans = tiny_plans(patch=(8, 8, 8))
    plans["dataset_name"] = plans_dataset or dataset_name
    conf = plans["configurations"]["3d_fullres"]
    conf["normalization_schemes"] = ["ZScoreNormalization"] * n_channels
    conf["use_mask_for_norm"] = [False] * n_channels
    stats = plans["foreground_intensity_properties_per_channel"]["0"]
    plans["foreground_intensity_properties_per_channel"] = {str(c): copy.deepcopy(stats) for c in range(n_channels)}
    dataset_json = {"channel_names": {str(c): f"ch{c}" for c in range(n_channels)},
                    "labels": {"background": 0, "lesion": 1}, "numTraining": 4, "file_ending": ".nii.gz"}
    folder = Path(results_root) / dataset_name / "__".join(MODEL)
    (folder / "fold_0").mkdir(parents=True)
    from longnet.utils.files import save_json

    save_json(plans, folder / "plans.json")
    save_json(dataset_json, folder / "dataset.json")
    torch.manual_seed(seed)
    net = build_network_from_architecture(conf["architecture"], n_channels, 2, deep_supervision=False)
    save_checkpoint({"network_weights": net.state_dict(), "init_args": {"configuration": "3d_fullres"},
                     "trainer_name": MODEL[0], "inference_allowed_mirroring_axes": [0, 1, 2]},
                    folder / "fold_0" / "checkpoint_final.pth")
    return folder


def predict_args(input_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """longnet_predict argv for the model made by make_seg_model_folder (-d/-c/-tr/-p form)."""
    return ["-i", str(input_dir), "-o", str(output_dir), "-d", DATASET.split("_")[0][len("Dataset"):],
            "-c", MODEL[2], "-tr", MODEL[0], "-p", MODEL[1], "-device", "cpu", "--disable_tta", *extra]


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under `folder` with its bytes (None if the folder does not exist): compare before/after."""
    folder = Path(folder)
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def temp_leftovers(folder: Path) -> list[str]:
    """Names that atomic writes use for their temp files (`.NAME.XXXX.tmp...`), anywhere under folder."""
    return sorted(str(p) for p in Path(folder).rglob(".*.tmp*"))


def assert_message(err: str, root: Path, file_name: str, *keywords: str) -> None:
    """Some stderr line names `file_name` and contains every keyword (case-insensitive), after the temporary
    root is masked so that a keyword cannot match the test's own folder names."""
    text = err.replace(str(root), "<root>")
    for line in text.splitlines():
        if file_name in line and all(k.lower() in line.lower() for k in keywords):
            return
    raise AssertionError(f"no stderr line names {file_name!r} with {keywords}; stderr was:\n{text}")


def assert_one_error(err: str) -> str:
    """The promised shape of a refusal: exactly one `longnet: error:` line and no traceback; returns that line."""
    lines = [line for line in err.splitlines() if line.startswith("longnet: error:")]
    assert len(lines) == 1, f"expected one 'longnet: error:' line, got {len(lines)}; stderr was:\n{err}"
    assert "Traceback" not in err, f"traceback on stderr:\n{err}"
    return lines[0]
