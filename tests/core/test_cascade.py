"""The cascade end to end on a dataset whose plans get a 3d_lowres stage: lowres folds write
`predicted_next_stage/`, 3d_cascade_fullres trains on image + one-hot of it (nnU-Net's channel layout), and
`longnet_predict -c 3d_cascade_fullres -prev_stage_predictions DIR` predicts from the lowres predictions."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from raw_datasets import longnet_roots, make_raw_dataset
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.cli.predict import main as predict_main
from longnet.cli.train import main as train_main
from longnet.data.cases import open_array

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAME = "Dataset998_Casc"
TINY = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--no-validation-mirroring", "-device", "cpu"]


@pytest.fixture(scope="module")
def cascade_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    mp = pytest.MonkeyPatch()
    env = longnet_roots(root, mp)
    raw = make_raw_dataset(env["LONGNET_RAW"], n_cases=6, shape=(48, 48, 48), name=NAME,
                           labels={"background": 0, "a": 1, "b": 2})
    (root / "input").mkdir()
    for c in ("case_000", "case_003"):
        shutil.copy(raw / "imagesTr" / f"{c}_0000.nii.gz", root / "input" / f"{c}_0000.nii.gz")
    # a small GPU-memory target makes the patch small next to the image: nnU-Net's rule then plans 3d_lowres
    assert main_plan_and_preprocess(["-d", "998", "-gpu_memory_target", "0.02", "-c", "3d_lowres", "3d_fullres",
                                     "-np", "1"]) == 0
    cases = [f"case_{i:03d}" for i in range(6)]
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    (env["LONGNET_PREPROCESSED"] / NAME / "splits_final.json").write_text(json.dumps(splits))
    yield {k: v for k, v in env.items()} | {"input": root / "input"}
    mp.undo()


def test_cascade_trains_and_predicts(cascade_roots, capsys):
    pre, res = cascade_roots["LONGNET_PREPROCESSED"] / NAME, cascade_roots["LONGNET_RESULTS"] / NAME
    plans = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"]
    assert plans["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    assert plans["3d_cascade_fullres"] == {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}

    # the second stage refuses to start before the first stage has validated every fold
    assert train_main(["998", "3d_cascade_fullres", "0", *TINY]) == 1
    err = capsys.readouterr().err
    assert "no segmentation from the previous stage" in err and "3d_lowres" in err
    assert not (res / "nnUNetTrainer__nnUNetPlans__3d_cascade_fullres").exists()

    for fold in ("0", "1"):
        assert train_main(["998", "3d_lowres", fold, *TINY]) == 0, capsys.readouterr().err
    next_stage = res / "nnUNetTrainer__nnUNetPlans__3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres"
    for i in range(6):
        seg = open_array(next_stage / f"case_{i:03d}.b2nd")
        full = open_array(pre / "nnUNetPlans_3d_fullres" / f"case_{i:03d}.b2nd")
        assert seg.shape == (1, *full.shape[1:])  # voxel-aligned with the fullres arrays
        assert set(np.unique(seg[...]).tolist()) <= {0, 1, 2}

    assert train_main(["998", "3d_cascade_fullres", "0", "--npz", *TINY]) == 0, capsys.readouterr().err
    model = res / "nnUNetTrainer__nnUNetPlans__3d_cascade_fullres"
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    first_conv = next(v for k, v in ckpt["network_weights"].items() if k.endswith("weight") and v.ndim == 5)
    assert first_conv.shape[1] == 1 + 2  # one image channel + one-hot of labels 1 and 2
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"} and len(summary["metric_per_case"]) == 3
    assert (model / "fold_0" / "validation" / "case_000.npz").is_file()

    images = cascade_roots["input"]
    out_low, out_casc = images.parent / "pred_low", images.parent / "pred_casc"
    assert predict_main(["-i", str(images), "-o", str(out_low), "-d", "998", "-c", "3d_lowres", "-f", "0", "1",
                         "--disable_tta", "-device", "cpu"]) == 0
    casc = ["-i", str(images), "-o", str(out_casc), "-d", "998", "-c", "3d_cascade_fullres", "-f", "0",
            "--disable_tta", "-device", "cpu"]
    assert predict_main(casc) == 1
    assert "-prev_stage_predictions" in capsys.readouterr().err and not out_casc.exists()
    assert predict_main([*casc, "-prev_stage_predictions", str(out_low)]) == 0, capsys.readouterr().err
    for c in ("case_000", "case_003"):
        ref = sitk.ReadImage(str(images / f"{c}_0000.nii.gz"))
        pred = sitk.ReadImage(str(out_casc / f"{c}.nii.gz"))
        assert pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing())
