"""Bad inputs through the commands users run: one clear stderr line naming the file and the problem, exit code 1,
and no partial outputs (the preprocessed / results / prediction folder is absent or byte-identical afterwards).

Dataset-file kinds reuse the mutations of test_bad_inputs.CORPUS (integrity level) and run them through
`longnet_plan_and_preprocess` with and without --verify_dataset_integrity: the plain run refuses the same files
in its fingerprint stage, which reads every case before anything is written. The other kinds are about names,
plugins, checkpoints, plans and prediction inputs.
"""
from __future__ import annotations

import json
import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from raw_datasets import make_raw_dataset, write_image
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from reliability_helpers import (DATASET, assert_message, assert_one_error, make_seg_model_folder, predict_args,
                                 set_roots, snapshot)
from test_bad_inputs import CORPUS, ZYX
from tiny_seg_dataset import DATASET as DATASET_TINY

# nnU-Net's plain run accepts these (they are suspicious, not unusable): only the integrity check refuses them.
INTEGRITY_ONLY = {"missing_numTraining", "numTraining_mismatch", "all_zero_image", "constant_image"}
# CORPUS's "4d_file" is a 3D image with 8 components per voxel (SimpleITK's reading of a (2, z, y, x) array);
# a genuinely 4D NIfTI is the extra kind "true_4d_file".


def _true_4d(folder: Path) -> None:
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(2,) + ZYX).astype(np.float32),
                                 isVector=False)
    sitk.WriteImage(img, str(folder / "imagesTr" / "case_001_0000.nii.gz"), useCompression=True)


DATA_KINDS = {**CORPUS, "true_4d_file": (_true_4d, {}, "case_001_0000.nii.gz", "image is 4D", "dataset is 3D")}
DATA_CASES = [pytest.param(kind, verify, id=f"{kind}-{'verify' if verify else 'plain'}")
              for kind in DATA_KINDS for verify in (True, False) if verify or kind not in INTEGRITY_ONLY]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


@pytest.fixture
def roots(tmp_path, monkeypatch):
    return set_roots(monkeypatch, tmp_path)


@pytest.mark.parametrize("kind,verify", DATA_CASES)
def test_bad_dataset_file_is_refused_by_plan_and_preprocess(roots, tmp_path, capsys, kind, verify):
    mutate, kwargs, file_name, *keywords = DATA_KINDS[kind]
    folder = make_raw_dataset(roots["raw"], n_cases=4, **kwargs)
    mutate(folder)
    raw_before = snapshot(folder)
    argv = ["-d", "999", "-c", "3d_fullres", "-np", "1"] + (["--verify_dataset_integrity"] if verify else [])
    assert main_plan_and_preprocess(argv) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, tmp_path, file_name, *keywords)
    assert not (roots["pre"] / DATASET).exists()  # nothing written: no fingerprint, no plans, no cases
    assert snapshot(folder) == raw_before  # and nothing (no temp file) added to the raw dataset


def test_unknown_planner_is_refused_before_the_fingerprint(roots, tmp_path, capsys):
    make_raw_dataset(roots["raw"], n_cases=2)
    assert main_plan_and_preprocess(["-d", "999", "-pl", "Nope", "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "unknown planner 'Nope'" in err and "ExperimentPlanner" in err  # lists what is available
    assert not (roots["pre"] / DATASET).exists()


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify"])
def test_image_without_label_in_nnunet_style_dataset_is_named(roots, capsys, verify):
    """No patientsTr.json: a case without a label file is probably a forgotten file. The run goes on (it is a legal
    unlabelled visit) but a warning names it."""
    make_raw_dataset(roots["raw"], n_cases=4, unlabelled=["case_002"])
    argv = ["-d", "999", "-c", "3d_fullres", "-np", "1", "--no_pp"] + (["--verify_dataset_integrity"] if verify else [])
    assert main_plan_and_preprocess(argv) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("longnet: warning:")]
    assert len(warnings) == 1, err
    assert "case_002_0000.nii.gz" in warnings[0] and "treated as an unlabelled visit" in warnings[0]


def test_unlabelled_visit_of_a_longitudinal_dataset_is_not_warned_about(roots, capsys):
    make_raw_dataset(roots["raw"], subjects={"s1": ["a", "b"], "s2": ["c", "d"]}, unlabelled=["b"])
    assert main_plan_and_preprocess(["-d", "999", "-c", "3d_fullres", "-np", "1", "--no_pp"]) == 0
    assert "warning" not in capsys.readouterr().err


# -- training: trainer names, requirements, checkpoints, plans --------------------------------------------------
TINY_TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "-device", "cpu"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny preprocessed dataset of tiny_seg_dataset (every subject has a single visit)."""
    from tiny_seg_dataset import make_tiny_dataset, set_env

    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    return tmp_path


def _longitudinal_trainer(monkeypatch) -> str:
    """A registered trainer that needs >= 2 visits per subject: TFMTrainer if its plugin imports, else a stand-in
    injected through the registry's entry points."""
    from longnet import registry
    from longnet.errors import LongnetError
    from longnet.training.requirements import Requirements
    from longnet.training.segmentation import nnUNetTrainer

    try:
        if registry.get_trainer("TFMTrainer").requirements.min_visits_per_subject >= 2:
            return "TFMTrainer"
    except LongnetError:
        pass

    class PairsTrainer(nnUNetTrainer):
        """Needs two visits per subject."""
        requirements = Requirements(min_visits_per_subject=2)

    real = registry._entry_points
    fake = types.SimpleNamespace(name="PairsTrainer", value="tests:PairsTrainer", group=registry.TRAINERS,
                                 dist=types.SimpleNamespace(name="tests", version="0"), load=lambda: PairsTrainer)
    monkeypatch.setattr(registry, "_entry_points", lambda g: real(g) + ([fake] if g == registry.TRAINERS else []))
    return "PairsTrainer"


class _Touch:
    """Unpickling this would create a file: proves that a refused checkpoint never ran its payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not a checkpoint" * 8)


def _foreign(path: Path) -> None:
    torch.save({"state": torch.zeros(2), "epoch": 3}, path)  # a torch file of another tool


def _pickled(path: Path) -> None:
    torch.save({"network_weights": {}, "current_epoch": 1, "optimizer_state": {},
                "payload": _Touch(path.parent / "PWNED")}, path)


def _truncated(path: Path) -> None:
    torch.save({"network_weights": {"w": torch.zeros(1000)}, "current_epoch": 1, "optimizer_state": {}}, path)
    path.write_bytes(path.read_bytes()[:300])


CHECKPOINTS = {"corrupt": (_garbage, "cannot read checkpoint"), "truncated": (_truncated, "cannot read checkpoint"),
               "foreign": (_foreign, "not a longnet checkpoint"),
               "pickled_object": (_pickled, "contains pickled objects")}


def _train_fails(argv: list[str], capsys, root: Path, file_name: str, *keywords: str) -> str:
    results = root / "results"
    before = snapshot(results)
    assert train_main(argv) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, root, file_name, *keywords)
    assert snapshot(results) == before, "a refused training run changed the results folder"
    return err


def test_unknown_trainer(tiny, capsys):
    _train_fails([DATASET_TINY, "3d_fullres", "0", "-tr", "Nope"] + TINY_TRAIN, capsys, tiny,
                 "unknown trainer 'Nope'", "nnUNetTrainer")


def test_trainer_requirements_not_met(tiny, capsys, monkeypatch):
    name = _longitudinal_trainer(monkeypatch)
    err = _train_fails([DATASET_TINY, "3d_fullres", "0", "-tr", name, "-device", "cpu"], capsys, tiny,
                       DATASET_TINY, f"requirements of trainer {name}")
    assert ">= 2 visits, found 0" in err and "patientsTr.json" in err  # what is missing and how to provide it
    assert not (tiny / "results" / DATASET_TINY).exists()


def test_plans_from_another_dataset(tiny, capsys):
    from tiny_seg_dataset import tiny_plans as tiny_seg_plans

    other = tiny / "preprocessed" / DATASET_TINY / "otherPlans.json"
    other.write_text(json.dumps(tiny_seg_plans("Dataset123_Other")))
    _train_fails([DATASET_TINY, "3d_fullres", "0", "-p", "otherPlans"] + TINY_TRAIN, capsys, tiny,
                 "otherPlans.json", "belongs to dataset 'Dataset123_Other'", DATASET_TINY)


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden"])
def test_plans_name_that_leaves_the_folder(tiny, capsys, name):
    _train_fails([DATASET_TINY, "3d_fullres", "0", "-p", name] + TINY_TRAIN, capsys, tiny, name, "not a valid name")


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_resume_checkpoint(tiny, capsys, kind):
    from tiny_seg_dataset import fold_dir

    make, keyword = CHECKPOINTS[kind]
    fd = fold_dir(tiny)
    fd.mkdir(parents=True)
    make(fd / "checkpoint_latest.pth")
    _train_fails([DATASET_TINY, "3d_fullres", "0", "--c"] + TINY_TRAIN, capsys, tiny, "checkpoint_latest.pth",
                 keyword)
    assert not (fd / "PWNED").exists()


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_pretrained_weights(tiny, capsys, kind):
    make, keyword = CHECKPOINTS[kind]
    path = tiny / "weights.pth"
    make(path)
    _train_fails([DATASET_TINY, "3d_fullres", "0", "--pretrained-weights", str(path)] + TINY_TRAIN, capsys, tiny,
                 "weights.pth", keyword)
    assert not (tiny / "PWNED").exists()
    assert not (tiny / "results" / DATASET_TINY).exists()


def test_pickled_payload_would_run_without_weights_only(tmp_path):
    """Guard for the test itself: the payload really runs when unpickled without weights_only."""
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_Touch(marker)))
    assert marker.exists()


# -- prediction ---------------------------------------------------------------------------------------------------
def _inputs(folder: Path, cases=("a", "b"), channels: int = 1) -> Path:
    rng = np.random.default_rng(0)
    for c in cases:
        for ch in range(channels):
            write_image(folder / f"{c}_{ch:04d}.nii.gz", rng.normal(100, 10, ZYX).astype(np.float32))
    return folder


def _predict_fails(argv: list[str], capsys, root: Path, file_name: str, *keywords: str) -> None:
    out = Path(argv[argv.index("-o") + 1])
    assert predict_main(argv) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, root, file_name, *keywords)
    assert not out.exists(), "a refused prediction created its output folder"


def test_predict_input_missing_a_channel_file(roots, tmp_path, capsys):
    make_seg_model_folder(roots["res"], n_channels=2)
    inp = _inputs(tmp_path / "in", channels=2)
    (inp / "b_0001.nii.gz").unlink()
    _predict_fails(predict_args(inp, tmp_path / "out"), capsys, tmp_path, "b_0001.nii.gz", "case 'b'", "missing")


def test_predict_case_id_with_dotdot(roots, tmp_path, capsys):
    make_seg_model_folder(roots["res"])
    inp = _inputs(tmp_path / "in", cases=("a", "x..y"))
    _predict_fails(predict_args(inp, tmp_path / "out"), capsys, tmp_path, "x..y_0000.nii.gz", "invalid case id")


@pytest.mark.parametrize("table", [{"s1": ["a", "../../escaped"]}, {"../s": ["a"]}, {"s1": ["sub/a"]}])
def test_predict_patients_file_with_path_in_case_id(roots, tmp_path, capsys, table):
    make_seg_model_folder(roots["res"])
    inp = _inputs(tmp_path / "in")
    patients = tmp_path / "patientsTs.json"
    patients.write_text(json.dumps(table))
    _predict_fails(predict_args(inp, tmp_path / "out", "--patients", str(patients)), capsys, tmp_path,
                   "patientsTs.json", "invalid case id")
    assert not (tmp_path / "escaped.nii.gz").exists()


def test_predict_plans_from_another_dataset(roots, tmp_path, capsys):
    make_seg_model_folder(roots["res"], plans_dataset="Dataset123_Other")
    _predict_fails(predict_args(_inputs(tmp_path / "in"), tmp_path / "out"), capsys, tmp_path, "plans.json",
                   "belongs to dataset 'Dataset123_Other'")


@pytest.mark.parametrize("target", ["os.system", "torch.nn.modules.module.torch",
                                    "dynamic_network_architectures.architectures.unet.torch"])
def test_predict_plans_naming_code_outside_the_allow_list(roots, tmp_path, capsys, target):
    """Plans are data: a dotted name may only resolve to a class defined in torch.nn / dynamic_network_architectures,
    not to a module or function that an allowed module happens to import."""
    folder = make_seg_model_folder(roots["res"])
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = target
    (folder / "plans.json").write_text(json.dumps(plans))
    _predict_fails(predict_args(_inputs(tmp_path / "in"), tmp_path / "out"), capsys, tmp_path, "plans.json",
                   "refusing", repr(target))


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_predict_bad_checkpoint(roots, tmp_path, capsys, kind):
    make, keyword = CHECKPOINTS[kind]
    folder = make_seg_model_folder(roots["res"])
    make(folder / "fold_0" / "checkpoint_final.pth")
    _predict_fails(predict_args(_inputs(tmp_path / "in"), tmp_path / "out"), capsys, tmp_path,
                   "checkpoint_final.pth", keyword)
    assert not (folder / "fold_0" / "PWNED").exists()



# -- security: a static guard over the package and the bundled plugins -----------------------------------------
REPO = Path(__file__).resolve().parents[2]
# importlib.import_module: a literal "longnet..." (prefix) name, or the plans resolver, which checks an allow-list
IMPORT_MODULE_ALLOWED = {"longnet/planning/network.py",  # allow-listed architecture classes
                         "longnet/api.py",  # its own fixed name table
                         "longnet/tasks.py"}  # evaluators named in code (built in, or an installed task)


def _fixed_longnet_module(call) -> bool:
    import ast

    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.JoinedStr) and arg.values:
        arg = arg.values[0]
    return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("longnet")


def _unsafe_calls(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else \
            (f.id if isinstance(f, ast.Name) else "")
        kw = {k.arg: k.value for k in node.keywords}
        safe_load = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        if (name == "torch.load" and not safe_load) or name in ("pickle.load", "pickle.loads", "eval", "exec",
                                                                  "pydoc.locate", "marshal.loads", "yaml.load"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
        if name == "importlib.import_module" and not _fixed_longnet_module(node) \
                and str(path.relative_to(REPO)) not in IMPORT_MODULE_ALLOWED:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
        if name == "np.load" and not (isinstance(kw.get("allow_pickle"), ast.Constant)
                                      and kw["allow_pickle"].value is False):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: np.load without allow_pickle=False")
    return found


def test_no_code_executing_loads_in_the_package_or_plugins():
    files = [p for d in ("longnet", "plugins") for p in (REPO / d).rglob("*.py")]
    assert files
    assert [c for p in files for c in _unsafe_calls(p)] == []
