"""What a new user meets first: the demo's output folder and name checks, messages that name the environment
variable to set, the warning before an nnU-Net-length training on a CPU, and the progress plot of a short run."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from longnet.errors import LongnetError

ROOT = Path(__file__).resolve().parents[2]


def test_demo_refuses_unknown_recipe_names_at_once(tmp_path, capsys):
    from longnet.demo.main import main

    t0 = time.perf_counter()
    assert main(["--out", str(tmp_path / "out"), "--trainers", "Nope"]) == 1
    err = capsys.readouterr().err
    assert "no demo recipe or trainer named 'Nope'; valid:" in err and "nnUNetTrainer" in err and "LongRep" in err
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "out").exists()  # nothing generated or written


def test_demo_writes_outside_the_source_tree_by_default():
    from longnet.demo.main import DEFAULT_OUT, _parser

    out = Path(_parser().parse_args([]).out).expanduser().resolve()
    assert out == DEFAULT_OUT.expanduser().resolve() and ROOT not in out.parents
    assert "/longnet_demo_out/" in (ROOT / ".gitignore").read_text().split()


def test_only_dataset_prints_the_environment_lines(tmp_path, capsys):
    from longnet.demo.main import main

    assert main(["--only-dataset", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"export LONGNET_RAW={tmp_path} LONGNET_PREPROCESSED={tmp_path / 'preprocessed'}" in out
    assert "export R=$LONGNET_RESULTS/Dataset990_LongDemo" in out


def test_dataset_messages_name_the_variables_and_the_next_command(tmp_path, monkeypatch):
    from longnet.paths import dataset_name_from_id, results_root

    for var in ("LONGNET_RAW", "LONGNET_PREPROCESSED", "LONGNET_RESULTS", "nnUNet_raw", "nnUNet_preprocessed",
                "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LongnetError, match="none of LONGNET_RAW, LONGNET_PREPROCESSED, LONGNET_RESULTS is set"):
        dataset_name_from_id("1")
    with pytest.raises(LongnetError, match="LONGNET_RESULTS .* is not set: export it"):
        results_root()
    (tmp_path / "Dataset004_Hippocampus").mkdir()
    monkeypatch.setenv("LONGNET_RAW", str(tmp_path))
    with pytest.raises(LongnetError) as e:
        dataset_name_from_id("999")
    text = str(e.value)
    assert "longnet_plan_and_preprocess -d 999" in text and "Dataset004_Hippocampus" in text
    assert "LONGNET_PREPROCESSED, LONGNET_RESULTS not set" in text


def test_predict_without_environment_names_longnet_results(tmp_path, monkeypatch, capsys):
    from longnet.cli.predict import main

    for var in ("LONGNET_RESULTS", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    assert main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), "-d", "1", "-c", "3d_fullres"]) == 1
    assert "LONGNET_RESULTS (or nnUNet_results) is not set" in capsys.readouterr().err


_Default = type("nnUNetTrainer", (), {"num_epochs": 1000, "num_iterations_per_epoch": 250})


def _warning(capsys, **kw) -> str:
    from longnet.cli.train import _warn_long_cpu_schedule

    args = argparse.Namespace(**{"epochs": None, "iters_per_epoch": None, "val": False, "device": "cpu", **kw})
    _warn_long_cpu_schedule(_Default, args)
    return capsys.readouterr().err


def test_default_schedule_on_the_cpu_is_announced(capsys):
    text = _warning(capsys)
    assert text.count("\n") == 1 and text.startswith("longnet: warning: nnUNetTrainer's default schedule is 1000 "
                                                     "epochs x 250 iterations (250,000 steps")
    assert "--epochs 10 --iters-per-epoch 50" in text
    assert _warning(capsys, epochs=10) == "" and _warning(capsys, iters_per_epoch=5) == ""
    assert _warning(capsys, device="cuda") == "" and _warning(capsys, val=True) == ""


def test_progress_plot_of_one_epoch_has_markers_and_a_title(tmp_path, monkeypatch):
    import matplotlib.axes

    from longnet.training.logger import TrainingLogger

    calls, titles = [], []
    original_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **k: calls.append(k) or original_plot(self, *a, **k))
    import matplotlib.figure

    original_title = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, t, **k: titles.append(t) or original_title(self, t, **k))
    log = TrainingLogger(tmp_path, True, title="LongRepPretrainer · Dataset990_LongDemo · 3d_fullres · fold all")
    for key, value in (("train_loss", 1.0), ("val_loss", 0.9), ("epoch_time", 3.0), ("lr", 1e-3)):
        log.log(key, value, 0)
    log.plot_progress()
    assert (tmp_path / "progress.png").is_file()
    assert calls and all(k.get("marker") == "o" for k in calls)
    assert titles == ["LongRepPretrainer · Dataset990_LongDemo · 3d_fullres · fold all"]


def test_forecast_picture_shows_the_median_case_and_says_how_many_improve():
    from longnet_tfm.demo import typical_case

    def row(case, tfm, lci):
        return {"case": case, "metrics": {"NRMSE": tfm}, "baseline": {"NRMSE": lci},
                "changed": {"prediction": {"NRMSE": tfm}, "baseline": {"NRMSE": lci}}}

    summary = {"metric_per_case": [row("a_v2_0000", 0.03, 0.05), row("a_v2_0001", 0.05, 0.04),
                                   row("b_v3_0000", 0.04, 0.041)],
               "side_by_side": {"overall": {"prediction": {"NRMSE": 0.04}, "LCI": {"NRMSE": 0.044}}}}
    case, channel, note = typical_case(summary)
    assert (case, channel) == ("b_v3", 0)
    assert "below LCI's on 2 of 3 test images" in note and "pooled 0.040 vs 0.044" in note


def test_voxelwise_trainers_warn_on_unaligned_plans():
    """LongRep and TFM compare visits voxel by voxel: plans without --align get one warning naming the fix."""
    from longnet.registry import get_trainer
    from longnet.training.requirements import alignment_warning

    for name in ("LongRepPretrainer", "LongRepFinetuner", "TFMTrainer"):
        req = get_trainer(name).requirements
        warning = alignment_warning(req, {"plans_name": "nnUNetPlans"}, name)
        assert warning and "--align rigid" in warning and name in warning
        assert alignment_warning(req, {"plans_name": "P", "longitudinal": {"align": "rigid"}}, name) is None
    assert alignment_warning(get_trainer("nnUNetTrainer").requirements, {"plans_name": "nnUNetPlans"}, "x") is None
