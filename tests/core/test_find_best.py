"""Model selection on fake trained models: two configurations × two folds whose validation predictions and
probabilities are built by hand, so the winner (a single model or their ensemble) is known."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.cli.model_selection import main_accumulate, main_find_best
from longnet.evaluation.longitudinal import aspc

D = "Dataset321_Sel"
SHAPE = (4, 8, 8)
SPACING = (1.0, 1.0, 2.0)  # x, y, z: 2 mm³ voxels
DJ = {"channel_names": {"0": "ch0"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 4,
      "file_ending": ".nii.gz"}
FOLDS = {0: ["s1_v1", "s2_v1"], 1: ["s1_v2", "s2_v2"]}
SUBJECTS = {"s1": ["s1_v1", "s1_v2"], "s2": ["s2_v1", "s2_v2"]}
SIZES = {"s1_v1": 2, "s1_v2": 3, "s2_v1": 3, "s2_v2": 4}  # lesion edge length: volumes change between visits


def truth(case: str) -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    n = SIZES[case]
    seg[0:n, 1:1 + n, 1:1 + n] = 1
    return seg


def write_seg(path: Path, arr: np.ndarray) -> None:
    write_image(path, arr.astype(np.uint8), SPACING)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


@pytest.fixture
def roots(tmp_path, monkeypatch):
    out = {}
    for key, var in (("raw", "LONGNET_RAW"), ("pre", "LONGNET_PREPROCESSED"), ("res", "LONGNET_RESULTS")):
        out[key] = tmp_path / key
        out[key].mkdir()
        monkeypatch.setenv(var, str(out[key]))
    monkeypatch.setenv("LONGNET_DEF_N_PROC", "1")
    plans = {"dataset_name": D, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
             "configurations": {"2d": {}, "3d_fullres": {}}}
    write_json(out["pre"] / D / "nnUNetPlans.json", plans)
    for case in SIZES:
        write_seg(out["pre"] / D / "gt_segmentations" / f"{case}.nii.gz", truth(case))
        write_seg(out["raw"] / D / "labelsTr" / f"{case}.nii.gz", truth(case))
    write_json(out["raw"] / D / "dataset.json", DJ)
    write_json(out["raw"] / D / "patientsTr.json", SUBJECTS)
    out["plans"] = plans
    return out


def make_model(res: Path, plans: dict, config: str, wrong_slab: int | None, npz: bool = True) -> Path:
    """A trained-looking model folder: lesion probability 0.9 inside the truth, 0.1 outside, except on z slice
    `wrong_slab` of the lesion, where the model is unsure and wrong (0.4)."""
    folder = res / D / f"nnUNetTrainer__nnUNetPlans__{config}"
    write_json(folder / "plans.json", plans)
    write_json(folder / "dataset.json", DJ)
    write_json(folder / "dataset_fingerprint.json", {})
    for fold, cases in FOLDS.items():
        val = folder / f"fold_{fold}" / "validation"
        for case in cases:
            t = truth(case)
            fg = np.where(t == 1, 0.9, 0.1).astype(np.float32)
            if wrong_slab is not None:
                fg[wrong_slab][t[wrong_slab] == 1] = 0.4
            probs = np.stack([1 - fg, fg])
            write_seg(val / f"{case}.nii.gz", probs.argmax(0))
            if npz:
                np.savez_compressed(val / f"{case}.npz", probabilities=probs)
                write_json(val / f"{case}.json", {"sitk_stuff": {"spacing": list(SPACING), "origin": [0.0] * 3,
                                                                 "direction": list(np.eye(3).ravel())},
                                                  "spacing": list(SPACING[::-1])})
        write_json(val / "summary.json", {})
    return folder


def test_find_best_picks_the_ensemble_and_writes_instructions(roots, capsys):
    make_model(roots["res"], roots["plans"], "2d", wrong_slab=0)
    make_model(roots["res"], roots["plans"], "3d_fullres", wrong_slab=1)
    assert main_find_best([D, "-c", "2d", "3d_fullres", "3d_lowres", "-f", "0", "1", "-np", "1"]) == 0
    res = roots["res"] / D
    info = json.loads((res / "inference_information.json").read_text())
    ens = "ensemble___nnUNetTrainer__nnUNetPlans__2d___nnUNetTrainer__nnUNetPlans__3d_fullres___0_1"
    assert list(info["all_results"]) == sorted(["nnUNetTrainer__nnUNetPlans__2d", ens,  # JSON keys are sorted
                                                "nnUNetTrainer__nnUNetPlans__3d_fullres"])
    assert info["all_results"][ens] == 1.0  # each model's unsure slab is rescued by the other's confidence
    assert info["all_results"]["nnUNetTrainer__nnUNetPlans__2d"] < 1.0
    best = info["best_model_or_ensemble"]
    assert set(best) == {"postprocessing_file", "result_on_crossval_post_pp", "result_on_crossval_pre_pp",
                         "selected_model_or_models", "some_plans_file"}
    assert best["selected_model_or_models"] == [
        {"configuration": "2d", "plans_identifier": "nnUNetPlans", "trainer": "nnUNetTrainer"},
        {"configuration": "3d_fullres", "plans_identifier": "nnUNetPlans", "trainer": "nnUNetTrainer"}]
    assert best["postprocessing_file"] == str(res / "ensembles" / ens / "postprocessing.pkl")
    assert Path(best["postprocessing_file"]).is_file() and (res / "ensembles" / ens / "postprocessing.json").is_file()
    assert best["result_on_crossval_pre_pp"] == 1.0 and best["result_on_crossval_post_pp"] == 1.0
    assert info["considered_models"] == [{"configuration": c, "plans": "nnUNetPlans", "trainer": "nnUNetTrainer"}
                                         for c in ("2d", "3d_fullres")]
    assert info["dataset_name_or_id"] == D and info["folds"] == [0, 1] and info["ensembling_allowed"] is True
    lines = (res / "inference_instructions.txt").read_text().splitlines()
    pred = f"longnet_predict -d {D} -i INPUT_FOLDER -o OUTPUT_FOLDER_MODEL_{{}} -f  0 1 -tr nnUNetTrainer -c {{}} " \
           "-p nnUNetPlans --save_probabilities"
    assert lines == [
        "***Run inference like this:***", "",
        "An ensemble won! What a surprise! Run the following commands to run predictions with the ensemble members:",
        "", pred.format(1, "2d"), pred.format(2, "3d_fullres"),
        "", "The run ensembling with:", "",
        "longnet_ensemble -i OUTPUT_FOLDER_MODEL_1 OUTPUT_FOLDER_MODEL_2 -o OUTPUT_FOLDER -np 1",
        "", "***Once inference is completed, run postprocessing like this:***", "",
        f"longnet_apply_postprocessing -i OUTPUT_FOLDER -o OUTPUT_FOLDER_PP -pp_pkl_file {best['postprocessing_file']}"
        f" -np 1 -plans_json {best['some_plans_file']}"]
    # cross-validation merged per model, against labelsTr
    cv = res / "nnUNetTrainer__nnUNetPlans__2d" / "crossval_results_folds_0_1"
    assert sorted(p.name for p in cv.iterdir()) == sorted(
        [f"{c}.nii.gz" for c in SIZES] + ["dataset.json", "plans.json", "summary.json"])
    summary = json.loads((cv / "summary.json").read_text())
    assert all("labelsTr" in c["reference_file"] and str(cv) in c["prediction_file"]
               for c in summary["metric_per_case"])
    # longitudinal consistency next to Dice: the perfect ensemble follows the references' change exactly
    lon = info["longitudinal"]
    assert set(lon) == set(info["all_results"])
    assert lon[ens]["num_pairs"] == 2 and lon[ens]["foreground_mean"]["ASPC_abs_difference"] == 0.0
    expected_ref = np.mean([aspc(2 ** 3 * 2, 3 ** 3 * 2), aspc(3 ** 3 * 2, 4 ** 3 * 2)])
    assert lon[ens]["mean"]["1"]["ASPC_ref"] == pytest.approx(expected_ref)
    assert lon["nnUNetTrainer__nnUNetPlans__2d"]["foreground_mean"]["ASPC_abs_difference"] > 0
    out = capsys.readouterr().out
    assert f"{ens}: 1.0  | ASPC pred" in out and "over 2 visit pair(s)" in out


def test_find_best_without_ensembling_picks_the_better_single_model(roots, capsys):
    make_model(roots["res"], roots["plans"], "2d", wrong_slab=0)
    make_model(roots["res"], roots["plans"], "3d_fullres", wrong_slab=None, npz=False)
    (roots["raw"] / D / "patientsTr.json").unlink()
    assert main_find_best([D, "-c", "2d", "3d_fullres", "-f", "0", "1", "--disable_ensembling"]) == 0
    res = roots["res"] / D
    info = json.loads((res / "inference_information.json").read_text())
    assert "longitudinal" not in info and not (res / "ensembles").exists()
    assert info["best_model_or_ensemble"]["selected_model_or_models"] == [
        {"configuration": "3d_fullres", "plans_identifier": "nnUNetPlans", "trainer": "nnUNetTrainer"}]
    lines = (res / "inference_instructions.txt").read_text().splitlines()
    assert lines[:3] == ["***Run inference like this:***", "",
                         f"longnet_predict -d {D} -i INPUT_FOLDER -o OUTPUT_FOLDER -f  0 1 -tr nnUNetTrainer "
                         "-c 3d_fullres -p nnUNetPlans"]
    assert lines[3:6] == ["", "***Once inference is completed, run postprocessing like this:***", ""]
    assert "crossval_results_folds_0_1/postprocessing.pkl" in lines[6]


def assert_one_error_line(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longnet: error: "), err
    for w in words:
        assert w in err[0], err[0]


def test_find_best_and_accumulate_bad_inputs_exit_1_with_one_line(roots, capsys):
    make_model(roots["res"], roots["plans"], "2d", wrong_slab=0)
    make_model(roots["res"], roots["plans"], "3d_fullres", wrong_slab=None, npz=False)
    assert main_find_best([D, "-c", "2d", "3d_fullres", "-f", "0", "1"]) == 1
    assert_one_error_line(capsys, "no {case}.npz", "--val --npz", "longnet_train")
    assert not (roots["res"] / D / "inference_information.json").exists()
    (roots["pre"] / D / "nnUNetPlans.json").write_text(json.dumps(
        {**roots["plans"], "configurations": {"2d": {}, "3d_fullres": {}, "3d_lowres": {}}}))
    assert main_find_best([D, "-c", "3d_lowres", "-f", "0", "1"]) == 1
    assert_one_error_line(capsys, "3d_lowres is planned but not trained")
    assert main_find_best([D, "-c", "../x"]) == 1
    assert_one_error_line(capsys, "not a valid name")
    # accumulate: a case in two folds, -o not empty, missing fold, unknown model
    model = roots["res"] / D / "nnUNetTrainer__nnUNetPlans__2d"
    dup = model / "fold_1" / "validation" / "s1_v1.nii.gz"
    dup.write_bytes((model / "fold_0" / "validation" / "s1_v1.nii.gz").read_bytes())
    assert main_accumulate([D, "-c", "2d", "-f", "0", "1"]) == 1
    assert_one_error_line(capsys, "s1_v1", "two folds")
    assert not (model / "crossval_results_folds_0_1").exists()
    dup.unlink()
    full = roots["res"] / "full"
    (full / "x").mkdir(parents=True)
    assert main_accumulate([D, "-c", "2d", "-f", "0", "1", "-o", str(full)]) == 1
    assert_one_error_line(capsys, "empty or absent")
    assert main_accumulate([D, "-c", "2d", "-f", "0", "1", "2"]) == 1
    assert_one_error_line(capsys, "fold_2", "validation")
    assert main_accumulate([D, "-c", "3d_lowres"]) == 1
    assert_one_error_line(capsys, "model folder not found")
    out = roots["res"] / "merged"
    assert main_accumulate([D, "-c", "2d", "-f", "0", "1", "-o", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert len(s["metric_per_case"]) == 4 and s["foreground_mean"]["Dice"] < 1.0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
