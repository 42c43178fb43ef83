"""nnU-Net's default first command and the 2d configuration end to end, and nnU-Net's flags as users type them:
`longnet_plan_and_preprocess -d ID` (2d + 3d_fullres), 2d training with `--npz`, `--val`/`--val_best`, a final
validation whose summary.json equals the evaluator on the exported files, `longnet_predict -num_parts/-part_id`
shards that together equal one run, and no parser that accepts abbreviations."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from raw_datasets import REPO_ROOT, longnet_roots, make_raw_dataset
from longnet.cli.evaluate_simple import main_simple as main_evaluate_simple
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAME = "Dataset997_TwoD"
TINY = ["--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "-device", "cpu"]


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("twod")
    mp = pytest.MonkeyPatch()
    env = longnet_roots(root, mp)
    raw = make_raw_dataset(env["LONGNET_RAW"], n_cases=6, shape=(24, 20, 10), spacing=(1.0, 1.0, 3.0),
                           name=NAME, labels={"background": 0, "a": 1, "b": 2})
    assert main_plan_and_preprocess(["-d", "997", "-np", "1"]) == 0  # nnU-Net's defaults: 2d 3d_fullres 3d_lowres
    assert train_main(["997", "2d", "0", "--npz", *TINY]) == 0
    yield {"raw": raw, "pre": env["LONGNET_PREPROCESSED"] / NAME,
           "model": env["LONGNET_RESULTS"] / NAME / "nnUNetTrainer__nnUNetPlans__2d", "root": root}
    mp.undo()


def test_default_configurations_include_2d(trained_2d):
    pre = trained_2d["pre"]
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert len(plans["configurations"]["2d"]["patch_size"]) == 2
    for identifier in ("nnUNetPlans_2d", "nnUNetPlans_3d_fullres"):
        assert len(list((pre / identifier).glob("*.b2nd"))) == 12  # data + seg of 6 cases


def test_2d_final_validation_equals_evaluator(trained_2d, tmp_path):
    val = trained_2d["model"] / "fold_0" / "validation"
    summary = json.loads((val / "summary.json").read_text())
    assert set(summary) == {"foreground_mean", "mean", "metric_per_case"}
    assert set(summary["mean"]) == {"1", "2"}
    cases = [Path(c["prediction_file"]).name for c in summary["metric_per_case"]]
    for name in cases:  # exported in the input geometry, probabilities and properties beside them (--npz)
        case = name[: -len(".nii.gz")]
        pred, ref = (sitk.ReadImage(str(d / name)) for d in (val, trained_2d["raw"] / "labelsTr"))
        assert pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing())
        probs = np.load(val / f"{case}.npz")["probabilities"]
        assert probs.shape == (3, *sitk.GetArrayFromImage(ref).shape)
        assert (val / f"{case}.json").is_file() and (val / f"{case}.pkl").is_file()
    out = tmp_path / "summary.json"
    assert main_evaluate_simple([str(trained_2d["pre"] / "gt_segmentations"), str(val), "-l", "1", "2",
                                 "-o", str(out), "-np", "1", "--chill"]) == 0
    again = json.loads(out.read_text())
    assert again["mean"] == summary["mean"] and again["foreground_mean"] == summary["foreground_mean"]


def test_val_reruns_only_the_validation(trained_2d, capsys):
    fold = trained_2d["model"] / "fold_0"
    final = fold / "checkpoint_final.pth"
    before = final.stat().st_mtime_ns
    (fold / "validation" / "summary.json").unlink()
    assert train_main(["997", "2d", "0", "--val", "--val_best", "-device", "cpu"]) == 0
    assert final.stat().st_mtime_ns == before and (fold / "validation" / "summary.json").is_file()
    assert "checkpoint_best.pth" in capsys.readouterr().out
    assert train_main(["997", "2d", "0", "--val", "--c", "-device", "cpu"]) == 1
    assert "--c and --val" in capsys.readouterr().err
    assert train_main(["997", "2d", "1", "--val", "-device", "cpu"]) == 1  # fold 1 was never trained
    assert "checkpoint_final.pth not found" in capsys.readouterr().err


def test_predict_parts_together_equal_one_run(trained_2d, capsys):
    images, root = trained_2d["raw"] / "imagesTr", trained_2d["root"]
    common = ["-i", str(images), "-d", "997", "-c", "2d", "-f", "0", "--disable_tta", "-device", "cpu",
              "--disable_progress_bar", "-npp", "2"]
    assert predict_main([*common, "-o", str(root / "whole")]) == 0
    for part in ("0", "1", "2"):
        assert predict_main([*common, "-o", str(root / "parts"), "-num_parts", "3", "-part_id", part]) == 0
    whole = sorted(p.name for p in (root / "whole").glob("*.nii.gz"))
    assert whole == sorted(p.name for p in (root / "parts").glob("*.nii.gz")) and len(whole) == 6
    for name in whole:
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(root / d / name))) for d in ("whole", "parts"))
        assert np.array_equal(a, b)
    assert predict_main([*common, "-o", str(root / "bad"), "-num_parts", "2", "-part_id", "2"]) == 1
    assert "-part_id" in capsys.readouterr().err and not (root / "bad").exists()


def test_no_parser_accepts_abbreviations():
    """`--val` must never be read as `--val-iters`, nor `-part_id` as `-p art_id`."""
    offenders = []
    for folder in ("longnet", "plugins", "planners"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) \
                        == "ArgumentParser" and "allow_abbrev" not in {k.arg for k in node.keywords}:
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not offenders, offenders
