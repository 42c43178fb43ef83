"""Hand-edited plans and out-of-range options: refused with one line naming the plans file and key (or the flag),
exit code 1, before anything is written into the results or prediction folder. An explicit 0 is never silently
turned into a default: it means 0 where that is meaningful (`--val-iters 0`), else it is refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from longnet.errors import LongnetError
from reliability_helpers import (assert_message, assert_one_error, make_seg_model_folder, predict_args, set_roots,
                                 snapshot)
from tiny_seg_dataset import DATASET, make_tiny_dataset, set_env, tiny_plans

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_TRAIN = ["--epochs", "1", "--iters-per-epoch", "1", "-device", "cpu"]

# key, bad value, words of the message (besides the key)
BAD_PLAN_VALUES = [
    ("patch_size", [16, 16], "different lengths"),
    ("patch_size", [16, 16, 16, 16], "2 or 3 positive integers"),
    ("patch_size", [0, 16, 16], "positive integers"),
    ("patch_size", [-16, 16, 16], "positive integers"),
    ("patch_size", [16.5, 16, 16], "positive integers"),
    ("patch_size", "16", "positive integers"),
    ("patch_size", [16, 16, 18], "not divisible by 4"),
    ("batch_size", 0, "integer >= 1"),
    ("batch_size", -2, "integer >= 1"),
    ("batch_size", 2.5, "integer >= 1"),
    ("batch_size", True, "integer >= 1"),
    ("spacing", [1.0, 1.0], "different lengths"),
    ("spacing", [1.0, 0.0, 1.0], "positive numbers"),
    ("spacing", [1.0, -1.0, 1.0], "positive numbers"),
    ("spacing", ["1", 1.0, 1.0], "positive numbers"),
]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    make_tiny_dataset(tmp_path)
    return tmp_path


def _edit_plans(path: Path, key: str, value) -> None:
    plans = json.loads(path.read_text())
    plans["configurations"]["3d_fullres"][key] = value
    path.write_text(json.dumps(plans))


def _train_refused(root: Path, argv: list[str], capsys, name: str, *keywords: str) -> str:
    before = snapshot(root / "results")
    assert train_main(argv) == 1
    err = capsys.readouterr().err
    line = assert_one_error(err)
    assert_message(err, root, name, *keywords)
    assert snapshot(root / "results") == before, "a refused training run changed the results folder"
    return line


@pytest.mark.parametrize("key,value,words", BAD_PLAN_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_PLAN_VALUES])
def test_hand_edited_plans_refused_by_train(tiny, capsys, key, value, words):
    _edit_plans(tiny / "preprocessed" / DATASET / "nnUNetPlans.json", key, value)
    _train_refused(tiny, [DATASET, "3d_fullres", "0"] + TINY_TRAIN, capsys, "nnUNetPlans.json", f"'{key}'", words)


@pytest.mark.parametrize("key,value,words", BAD_PLAN_VALUES[::3],
                         ids=[f"{k}={v!r}" for k, v, _ in BAD_PLAN_VALUES[::3]])
def test_hand_edited_plans_refused_by_predict(tmp_path, monkeypatch, capsys, key, value, words):
    roots = set_roots(monkeypatch, tmp_path)
    folder = make_seg_model_folder(roots["res"])
    if key == "patch_size" and "divisible" in words:
        value = [8, 8, 9]  # the model folder's network halves once
        words = "not divisible by 2"
    _edit_plans(folder / "plans.json", key, value)
    inp = tmp_path / "in"
    write_image(inp / "a_0000.nii.gz", np.random.default_rng(0).normal(100, 10, (10, 12, 8)).astype(np.float32))
    out = tmp_path / "out"
    assert predict_main(predict_args(inp, out)) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, tmp_path, "plans.json", f"'{key}'", words)
    assert not out.exists()


BAD_OPTIONS = [
    ("--epochs", "0", ">= 1"), ("--epochs", "-3", ">= 1"), ("--iters-per-epoch", "0", ">= 1"),
    ("--iters-per-epoch", "-1", ">= 1"), ("--val-iters", "-1", ">= 0"), ("--save-every", "0", ">= 1"),
    ("--seed", "-1", ">= 0"),
]


@pytest.mark.parametrize("flag,value,words", BAD_OPTIONS, ids=[f"{f}={v}" for f, v, _ in BAD_OPTIONS])
def test_out_of_range_option_refused_by_train(tiny, capsys, flag, value, words):
    argv = [DATASET, "3d_fullres", "0", "-device", "cpu", flag, value]
    _train_refused(tiny, argv, capsys, flag, f"got {value}", words)
    assert not (tiny / "results" / DATASET).exists()


@pytest.mark.parametrize("options", [{"epochs": 0}, {"epochs": -1}, {"iters_per_epoch": 0}, {"save_every": 0},
                                     {"val_iters": -2}, {"epochs": 2.5}, {"epochs": "3"}, {"seed": -5}])
def test_out_of_range_option_refused_in_process(options):
    """Trainer.__init__ applies the same ranges, so in-process users cannot train 1000 epochs by passing 0."""
    from longnet.training.segmentation import nnUNetTrainer

    dj = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    key = next(iter(options))
    with pytest.raises(LongnetError, match="--" + key.replace("_", "-")):
        nnUNetTrainer(tiny_plans(), "3d_fullres", 0, dj, options=options)


def test_explicit_zero_validation_iterations_mean_zero():
    from longnet.training.segmentation import nnUNetTrainer

    dj = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    trainer = nnUNetTrainer(tiny_plans(), "3d_fullres", 0, dj, options={"val_iters": 0, "epochs": 3, "seed": 0})
    assert (trainer.num_val_iterations_per_epoch, trainer.num_epochs, trainer.seed) == (0, 3, 0)


@pytest.mark.parametrize("value", ["-1", "two"])
def test_negative_loader_worker_count_refused(monkeypatch, value):
    from longnet.data.loader import default_num_workers

    monkeypatch.setenv("LONGNET_N_PROC_DA", value)
    with pytest.raises(LongnetError, match="LONGNET_N_PROC_DA must be an integer >= 0"):
        default_num_workers()


PLUGIN_OPTIONS = [("LongRepPretrainer", {"num_patches": 0}), ("LongRepPretrainer", {"lr": 0.0}),
                  ("LongRepFinetuner", {"lr": -1.0}), ("ClinImCLTrainer", {"tau": 0.0}),
                  ("ClinImCLTrainer", {"weight_decay": -0.1}), ("LEARNERTrainer", {"batch_size": 0}),
                  ("LEARNERTrainer", {"projector_dim": -1}), ("LEARNERChangeTrainer", {"hidden": 0}),
                  ("STAMPTrainer", {"batch_size": 0}), ("STAMPProbeTrainer", {"prior_samples": 0}),
                  ("LongRepPretrainer", {"lambda_sim": -1.0}), ("LongRepFinetuner", {"lr_decay_start": 1.5}),
                  ("nnUNetTrainer", {"labelled_subjects": 0}), ("nnUNetTrainer", {"labelled_seed": -1})]


@pytest.mark.parametrize("trainer,options", PLUGIN_OPTIONS, ids=[f"{t}-{next(iter(o))}" for t, o in PLUGIN_OPTIONS])
def test_plugin_options_have_ranges(trainer, options):
    """Options that plugins used to read as `options.get(x) or default` are range-checked like the core's."""
    from longnet.registry import get_trainer

    try:
        cls = get_trainer(trainer)
    except LongnetError:
        pytest.skip(f"{trainer} is not installed")
    with pytest.raises(LongnetError, match="--" + next(iter(options)).replace("_", "-")):
        cls.check_options(options)
    cls.check_options({k: None for k in options})  # not given: the trainer's default


def test_plugin_option_zero_that_means_zero_is_kept():
    from longnet.registry import get_trainer

    try:
        cls = get_trainer("LEARNERTrainer")
    except LongnetError:
        pytest.skip("LEARNERTrainer is not installed")
    cls.check_options({"projector_dim": 0, "weight_decay": 0.0})  # no projector, no weight decay


@pytest.mark.parametrize("argv,words", [(["-np", "0"], "-np must be an integer >= 1"),
                                        (["-np", "2", "-1"], "-np must be an integer >= 1"),
                                        (["-npfp", "0"], "-npfp must be an integer >= 1"),
                                        (["-gpu_memory_target", "0"], "-gpu_memory_target must be"),
                                        (["-overwrite_target_spacing", "1", "0", "1"], "positive numbers")])
def test_out_of_range_preprocessing_numbers_refused(tmp_path, monkeypatch, capsys, argv, words):
    from raw_datasets import make_raw_dataset
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess

    roots = set_roots(monkeypatch, tmp_path)
    make_raw_dataset(roots["raw"], n_cases=4)
    assert main_plan_and_preprocess(["-d", "999", "-c", "3d_fullres"] + argv) == 1
    assert words in assert_one_error(capsys.readouterr().err)
    assert list(roots["pre"].iterdir()) == []
