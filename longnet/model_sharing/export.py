"""Which files of a results folder make up a shared model, and the zip that holds them.

The selection follows nnU-Net 2.8.1's exporter file for file, so a zip written here installs into nnU-Net and
one written by nnU-Net installs here. Member names are relative to the results root (`<Dataset>/<TPC>/...`).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable, Sequence

from longnet.errors import LongnetError
from longnet.utils.files import atomic_path

DEFAULT_CONFIGURATIONS = ("3d_lowres", "3d_fullres", "2d", "3d_cascade_fullres")
DEFAULT_FOLDS = ("0", "1", "2", "3", "4")
DEFAULT_CHECKPOINTS = ("checkpoint_final.pth",)
_SIDE_FILES = ("summary.json", "postprocessing.pkl", "postprocessing.json")  # of crossval and ensemble folders
_MODEL_FILES = ("plans.json", "dataset_fingerprint.json", "dataset.json")


def fold_folder_name(fold: str) -> str:
    return "fold_all" if str(fold) == "all" else f"fold_{fold}"


def crossval_folder_name(folds: Sequence[str]) -> str:
    return "crossval_results_folds_" + "_".join(str(f) for f in folds)


def _required(path: Path) -> Path:
    if not path.is_file():
        raise LongnetError("file not found (every exported fold needs it)", path)
    return path


def _visible_files(folder: Path) -> list[Path]:
    """Plain files of a folder, sorted; hidden names (leftovers of interrupted atomic writes) are not model files."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _fold_files(fold_dir: Path, checkpoints: Sequence[str], cv_preds: bool) -> list[Path]:
    files = [fold_dir / "debug.json"] if (fold_dir / "debug.json").is_file() else []
    files += [_required(fold_dir / chk) for chk in checkpoints]
    files.append(_required(fold_dir / "progress.png"))
    if (fold_dir / "network_architecture.pdf").is_file():
        files.append(fold_dir / "network_architecture.pdf")
    if cv_preds:
        files += [p for p in _visible_files(fold_dir / "validation") if not p.name.endswith((".npz", ".pkl"))]
    else:
        files.append(_required(fold_dir / "validation" / "summary.json"))
    return files


def _side_files(folder: Path, cv_preds: bool) -> list[Path]:
    if cv_preds:
        return _visible_files(folder)
    return [folder / n for n in _SIDE_FILES if (folder / n).is_file()]


def _ensemble_members(name: str) -> list[tuple[str, ...]] | None:
    """`ensemble___<tr__pl__c>___..___<folds>` -> [(tr, pl, c), ...]; None when the name is not of that form."""
    parts = name.split("___")
    if len(parts) < 3:
        return None
    from longnet.io.model_folder import ModelName

    members = [ModelName.parse(m) for m in parts[1:-1]]
    return [(m.trainer, m.plans, m.configuration) for m in members] if all(m.trainer for m in members) else None


def collect_model_files(results: Path, dataset_name: str, configurations: Sequence[str], trainer: str,
                        plans: str, folds: Sequence[str], checkpoints: Sequence[str] = DEFAULT_CHECKPOINTS,
                        cv_preds: bool = False) -> list[Path]:
    """Every file of the export in archive order. A listed configuration without its model folder, a missing
    fold folder or a missing required file is an error naming the path (nnU-Net 2.8.1 has no lenient mode)."""
    dataset_dir = results / dataset_name
    files: list[Path] = []
    for conf in configurations:
        model = dataset_dir / f"{trainer}__{plans}__{conf}"
        if not model.is_dir():
            raise LongnetError(f"no trained model for configuration {conf!r} (pass -c with the configurations "
                               "to export)", model)
        for fold in folds:
            if not (model / fold_folder_name(fold)).is_dir():
                raise LongnetError(f"fold {fold} was requested but its folder is missing (pass -f)",
                                   model / fold_folder_name(fold))
        _required(model / "plans.json")
        for fold in folds:
            files += _fold_files(model / fold_folder_name(fold), checkpoints, cv_preds)
        files += _side_files(model / crossval_folder_name(folds), cv_preds)
        files += [_required(model / n) for n in _MODEL_FILES]
    ensembles = dataset_dir / "ensembles"
    if ensembles.is_dir():
        for ens in sorted(p for p in ensembles.iterdir() if p.is_dir()):
            members = _ensemble_members(ens.name)
            if members and all(m[0] == trainer and m[1] == plans and m[2] in configurations for m in members):
                files += _side_files(ens, cv_preds)
    files += [dataset_dir / n for n in ("inference_information.json", "inference_information.txt")
              if (dataset_dir / n).is_file()]
    return list(dict.fromkeys(files))  # a configuration listed twice is exported once


def member_name(path: Path, results: Path) -> str:
    return path.relative_to(results).as_posix()


def write_model_zip(files: Iterable[Path], results: Path, dest: str | Path) -> Path:
    """Deflate-compressed zip of `files` named relative to `results`, written atomically."""
    dest = Path(dest)
    with atomic_path(dest, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, member_name(f, results))
    return dest
