"""Evaluation refuses what it cannot score honestly, through each command (longnet_evaluate, longnet_evaluate_simple,
longnet_evaluate_folder): a prediction on another grid than its reference (same shape, other spacing, origin or
direction), a folder compared with itself, a summary that would land in the reference folder, and label values that
dataset.json does not declare. Each gets one error line naming the file, exit 1, and no file written or changed."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import write_image
from longnet.cli.evaluate import main as evaluate_main
from longnet.cli.evaluate_simple import main_folder, main_simple
from longnet.errors import LongnetError
from longnet.evaluation.nnunet_summary import evaluate_to_summary
from reliability_helpers import assert_message, assert_one_error, snapshot

ZYX = (6, 8, 10)
LABELS = {"background": 0, "lesion": 1, "ignore": 2}
SKEW = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0]


def _seg(value: int | None = None) -> np.ndarray:
    seg = np.zeros(ZYX, np.uint8)
    seg[1:4, 2:6, 3:8] = 1
    seg[5, 7, 9] = 2  # the ignore label: declared, so allowed in a reference
    if value is not None:
        seg[0, 0, 0] = value
    return seg


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """raw/labelsTr (references, dataset.json next to them) and pred/ (predictions with the dataset.json and plans.json
    that longnet_predict leaves there)."""
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    dj = {"channel_names": {"0": "ct"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}
    for case in ("a", "b"):
        write_image(raw / "labelsTr" / f"{case}.nii.gz", _seg())
        prediction = _seg()
        prediction[5, 7, 9] = 0
        write_image(pred / f"{case}.nii.gz", prediction)
    for folder in (raw, pred):
        (folder / "dataset.json").write_text(json.dumps(dj))
    (pred / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
    return {"gt": raw / "labelsTr", "pred": pred, "dj": raw / "dataset.json", "plans": pred / "plans.json",
            "root": tmp_path}


def _argv(command: str, f: dict, gt: Path | None = None, pred: Path | None = None, *extra: str) -> list[str]:
    gt, pred = str(gt or f["gt"]), str(pred or f["pred"])
    if command == "evaluate":
        return [gt, pred, "-djfile", str(f["dj"]), "--no_hd95", *extra]
    if command == "evaluate_simple":
        return [gt, pred, "-l", "1", "-np", "1", *extra]
    return [gt, pred, "-djfile", str(f["dj"]), "-pfile", str(f["plans"]), "-np", "1", *extra]


MAINS = {"evaluate": evaluate_main, "evaluate_simple": main_simple, "evaluate_folder": main_folder}
COMMANDS = list(MAINS)


def _refused(command: str, argv: list[str], f: dict, capsys, file_name: str, *keywords: str) -> None:
    before = snapshot(f["root"])
    assert MAINS[command](argv) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, f["root"], file_name, *keywords)
    assert snapshot(f["root"]) == before, "a refused evaluation wrote or changed a file"


@pytest.mark.parametrize("command", COMMANDS)
def test_valid_predictions_are_scored(folders, command, capsys):
    assert MAINS[command](_argv(command, folders)) == 0
    summary = json.loads((folders["pred"] / "summary.json").read_text())
    assert summary["mean"]["1"]["Dice"] == 1.0


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("aspect,geometry", [("spacing", {"spacing": [1.0, 1.0, 2.0]}),
                                             ("origin", {"origin": [0.0, 4.0, 0.0]}),
                                             ("direction", {"direction": SKEW})])
def test_prediction_on_another_grid_is_refused(folders, capsys, command, aspect, geometry):
    prediction = _seg()
    prediction[5, 7, 9] = 0
    write_image(folders["pred"] / "b.nii.gz", prediction, **geometry)  # same shape, same voxels
    _refused(command, _argv(command, folders), folders, capsys, "b.nii.gz", "prediction geometry differs", aspect)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("spelling", ["same", "dot", "symlink"])
def test_folder_against_itself_is_refused(folders, capsys, command, spelling):
    gt = folders["gt"]
    pred = {"same": gt, "dot": gt / ".." / gt.name / "."}.get(spelling)
    if spelling == "symlink":
        pred = folders["root"] / "link"
        os.symlink(gt, pred)
    _refused(command, _argv(command, folders, gt, pred), folders, capsys, str(pred.name or "."),
             "prediction folder is the reference folder")
    assert not (gt / "summary.json").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_summary_into_the_reference_folder_is_refused(folders, capsys, command):
    out = folders["gt"] / "summary.json"
    _refused(command, _argv(command, folders, None, None, "-o", str(out)), folders, capsys, "summary.json",
             "refusing to write the summary into the reference folder")


def test_predictions_inside_the_reference_folder_do_not_get_a_summary_there(folders, capsys):
    inner = folders["gt"] / "predictions"
    inner.mkdir()
    for p in ("a.nii.gz", "b.nii.gz", "dataset.json"):
        (inner / p).write_bytes((folders["pred"] / p).read_bytes())
    _refused("evaluate", _argv("evaluate", folders, None, inner), folders, capsys, "summary.json",
             "reference folder")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("side", ["prediction", "reference"])
def test_undeclared_label_value_is_refused(folders, capsys, command, side):
    path = folders["pred" if side == "prediction" else "gt"] / "b.nii.gz"
    write_image(path, _seg(value=5))
    _refused(command, _argv(command, folders), folders, capsys, "b.nii.gz", "label values [5]", "not declared")


def test_evaluate_simple_without_dataset_json_takes_the_labels_as_given(folders):
    """nnU-Net's evaluate_simple: -l may name a subset; without a dataset.json no value list exists to check."""
    (folders["pred"] / "dataset.json").unlink()
    write_image(folders["pred"] / "b.nii.gz", _seg(value=5))
    assert main_simple(_argv("evaluate_simple", folders)) == 0


def test_pipeline_summary_never_lands_in_the_reference_folder(folders):
    dj = json.loads(folders["dj"].read_text())
    before = snapshot(folders["gt"])
    with pytest.raises(LongnetError, match="reference folder"):
        evaluate_to_summary(folders["gt"], folders["pred"], dj, folders["gt"] / "summary.json")
    with pytest.raises(LongnetError, match="prediction folder is the reference folder"):
        evaluate_to_summary(folders["gt"], folders["gt"], dj, folders["root"] / "summary.json")
    assert snapshot(folders["gt"]) == before and not (folders["root"] / "summary.json").exists()
