"""A 2D dataset of RGB PNG files (nnU-Net's NaturalImage2DIO) through the whole pipeline: the default
`longnet_plan_and_preprocess` plans only 2d and says why, 2d trains with a final validation written as PNG, and
`longnet_predict` writes PNG label maps of the input's size."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from raw_datasets import longnet_roots
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from test_image_formats import NAME, _natural

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rgb_png_dataset_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("longnet.fingerprint.extractor.FOREGROUND_SAMPLE_BUDGET", 1e5)
    env = longnet_roots(tmp_path, monkeypatch)
    raw = _natural(env["LONGNET_RAW"], ".png", rgb=True)
    dataset_id = NAME[len("Dataset"):len("Dataset") + 3]
    assert main_plan_and_preprocess(["-d", dataset_id, "-np", "1"]) == 0
    out = capsys.readouterr().out
    assert "3d_fullres is not planned" in out and "images are 2D" in out
    plans = json.loads((env["LONGNET_PREPROCESSED"] / NAME / "nnUNetPlans.json").read_text())
    assert list(plans["configurations"]) == ["2d"] and plans["image_reader_writer"] == "NaturalImage2DIO"

    assert train_main([dataset_id, "2d", "0", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1",
                       "-device", "cpu"]) == 0, capsys.readouterr().err
    val = env["LONGNET_RESULTS"] / NAME / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation"
    summary = json.loads((val / "summary.json").read_text())
    assert summary["metric_per_case"] and all(c["prediction_file"].endswith(".png")
                                              for c in summary["metric_per_case"])

    inp = tmp_path / "input"
    inp.mkdir()
    (inp / "c1_0000.png").write_bytes((raw / "imagesTr" / "c1_0000.png").read_bytes())
    assert predict_main(["-i", str(inp), "-o", str(tmp_path / "pred"), "-d", dataset_id, "-c", "2d", "-f", "0",
                         "-device", "cpu"]) == 0, capsys.readouterr().err
    pred = np.array(Image.open(tmp_path / "pred" / "c1.png"))
    reference = np.array(Image.open(raw / "labelsTr" / "c1.png"))
    assert pred.shape == reference.shape and set(np.unique(pred).tolist()) <= {0, 1}
