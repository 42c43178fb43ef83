"""The second half of nnU-Net's workflow with longnet commands only, on real training runs: 2d and 3d_fullres on two
folds with `--npz` → `longnet_find_best_configuration` → predictions with `--save_probabilities` →
`longnet_ensemble` → `longnet_apply_postprocessing`, and the chosen model through a zip into another results
folder, predicting the same voxels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from raw_datasets import longnet_roots, make_raw_dataset
from longnet.cli.ensemble import main as ensemble_main
from longnet.cli.model_selection import main_find_best
from longnet.cli.model_sharing import main_export, main_install
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.postprocessing import main_apply
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAME = "Dataset996_Chain"
TINY = ["--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "--no-validation-mirroring", "-device", "cpu"]


def _labels(folder, name):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))


def test_find_best_ensemble_postprocess_and_zip(tmp_path, monkeypatch, capsys):
    env = longnet_roots(tmp_path, monkeypatch)
    raw = make_raw_dataset(env["LONGNET_RAW"], n_cases=6, shape=(24, 20, 12), name=NAME,
                           labels={"background": 0, "a": 1, "b": 2})
    assert main_plan_and_preprocess(["-d", "996", "-c", "2d", "3d_fullres", "-np", "1"]) == 0
    cases = [f"case_{i:03d}" for i in range(6)]
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    (env["LONGNET_PREPROCESSED"] / NAME / "splits_final.json").write_text(json.dumps(splits))
    for configuration in ("2d", "3d_fullres"):
        for fold in ("0", "1"):
            assert train_main(["996", configuration, fold, "--npz", *TINY]) == 0, capsys.readouterr().err

    assert main_find_best(["996", "-c", "2d", "3d_fullres", "-f", "0", "1", "-np", "1"]) == 0
    res = env["LONGNET_RESULTS"] / NAME
    info = json.loads((res / "inference_information.json").read_text())
    assert set(info["all_results"]) == {"nnUNetTrainer__nnUNetPlans__2d", "nnUNetTrainer__nnUNetPlans__3d_fullres",
                                        "ensemble___nnUNetTrainer__nnUNetPlans__2d___nnUNetTrainer__nnUNetPlans__"
                                        "3d_fullres___0_1"}
    best = max(info["all_results"].values())
    assert info["best_model_or_ensemble"]["result_on_crossval_pre_pp"] == pytest.approx(best)
    instructions = (res / "inference_instructions.txt").read_text()
    assert "longnet_predict" in instructions and "longnet_apply_postprocessing" in instructions

    images = raw / "imagesTr"
    common = ["-i", str(images), "-d", "996", "-f", "0", "1", "--disable_tta", "-device", "cpu",
              "--save_probabilities"]
    for configuration in ("2d", "3d_fullres"):
        assert predict_main([*common, "-c", configuration, "-o", str(tmp_path / configuration)]) == 0
        assert len(list((tmp_path / configuration).glob("*.npz"))) == 6
    ens = tmp_path / "ensemble"
    assert ensemble_main(["-i", str(tmp_path / "2d"), str(tmp_path / "3d_fullres"), "-o", str(ens), "-np", "1"]) == 0
    for c in cases:  # the ensemble is the argmax of the averaged probabilities
        p = sum(np.load(tmp_path / cfg / f"{c}.npz")["probabilities"] for cfg in ("2d", "3d_fullres")) / 2
        assert np.array_equal(_labels(ens, f"{c}.nii.gz"), p.argmax(0))

    pp_file = info["best_model_or_ensemble"]["postprocessing_file"].replace(".pkl", ".json")
    pp_out = tmp_path / "pp"
    assert main_apply(["-i", str(ens), "-o", str(pp_out), "-pp_file", pp_file, "-np", "1",
                       "-plans_json", str(res / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "plans.json")]) == 0
    assert sorted(p.name for p in pp_out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]

    zip_file = tmp_path / "model.zip"
    assert main_export(["-d", "996", "-o", str(zip_file), "-c", "3d_fullres", "-f", "0", "1"]) == 0
    other = tmp_path / "other_results"
    other.mkdir()
    monkeypatch.setenv("LONGNET_RESULTS", str(other))
    assert main_install([str(zip_file)]) == 0
    installed = other / NAME / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert predict_main(["-i", str(images), "-m", str(installed), "-f", "0", "1", "--disable_tta", "-device", "cpu",
                         "-o", str(tmp_path / "from_zip")]) == 0
    for c in cases:
        assert np.array_equal(_labels(tmp_path / "from_zip", f"{c}.nii.gz"),
                              _labels(tmp_path / "3d_fullres", f"{c}.nii.gz"))
