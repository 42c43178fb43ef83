"""Export round trip (geometry, cropping, transposition, resampling) and the predict/evaluate commands on a tiny
randomly initialised model folder."""
from __future__ import annotations

import json
import shutil
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from raw_datasets import make_raw_dataset, write_image
from longnet.dataset.io import read_image_files, read_seg_file
from longnet.dataset.labels import LabelManager
from longnet.inference.export import export_prediction
from longnet.planning.network import build_network_from_architecture
from longnet.planning.plans import Plans
from longnet.preprocessing.preprocessor import preprocess_case

DJ = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4,
      "file_ending": ".nii.gz"}


def tiny_plans(spacing=(1.0, 1.0, 1.0), patch=(16, 16, 16), transpose=(0, 1, 2)) -> dict:
    back = [int(i) for i in np.argsort(transpose)]
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                            "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]],
                            "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    conf = {"data_identifier": "tiny_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": list(spacing),
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": arch, "batch_dice": False}
    return {"dataset_name": "Dataset999_Test", "plans_name": "tinyPlans", "transpose_forward": list(transpose),
            "transpose_backward": back, "configurations": {"3d_fullres": conf},
            "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0, "min": 0.0, "max": 1.0,
                                                                   "median": 0.0, "percentile_00_5": 0.0,
                                                                   "percentile_99_5": 1.0}}}


def make_model_folder(root: Path, dataset_json: dict, plans: dict, folds=(0,), seed=0) -> Path:
    folder = root / "MyTrainer__tinyPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    lm = LabelManager.from_dataset_json(dataset_json)
    for f in folds:
        torch.manual_seed(seed + f)
        net = build_network_from_architecture(plans["configurations"]["3d_fullres"]["architecture"], 1,
                                              lm.num_segmentation_heads, deep_supervision=True)
        weights = {f"_orig_mod.{k}": v for k, v in net.state_dict().items()}  # as saved from a compiled model
        (folder / f"fold_{f}").mkdir()
        torch.save({"network_weights": weights, "init_args": {"configuration": "3d_fullres"},
                    "trainer_name": "MyTrainer", "inference_allowed_mirroring_axes": [0, 1, 2]},
                   folder / f"fold_{f}" / "checkpoint_final.pth")
    return folder


def _case_with_geometry(tmp_path: Path, spacing):
    rng = np.random.default_rng(1)
    seg = np.zeros((14, 18, 11), np.uint8)  # z, y, x
    seg[3:9, 4:12, 2:8] = 1
    seg[8:12, 10:16, 5:10] = 2
    img = rng.normal(100, 5, seg.shape).astype(np.float32) + 40 * seg
    img[:, :2] = 0  # zero border -> cropping to nonzero is exercised
    direction = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    write_image(tmp_path / "img_0000.nii.gz", img, spacing, (3.0, -7.5, 12.0), direction)
    write_image(tmp_path / "lab.nii.gz", seg, spacing, (3.0, -7.5, 12.0), direction)
    return tmp_path / "img_0000.nii.gz", tmp_path / "lab.nii.gz"


@pytest.mark.parametrize("transpose,target_spacing,exact", [((0, 1, 2), None, True), ((2, 0, 1), None, True),
                                                            ((0, 1, 2), (2.0, 1.0, 1.0), False)])
def test_export_round_trip(tmp_path, transpose, target_spacing, exact):
    spacing_xyz = (1.0, 0.8, 2.5)
    img_file, lab_file = _case_with_geometry(tmp_path, spacing_xyz)
    data, props = read_image_files([img_file])
    seg, _ = read_seg_file(lab_file)
    spacing_t = [props["spacing"][i] for i in transpose]
    plans = Plans(tiny_plans(spacing=target_spacing or spacing_t, transpose=transpose))
    conf = plans.configuration("3d_fullres")
    _, pseg, pprops = preprocess_case(data, seg, props, plans, "3d_fullres", DJ)
    lm = LabelManager.from_dataset_json(DJ)
    ref = np.where(pseg[0] < 0, 0, pseg[0])
    logits = torch.from_numpy(np.stack([(ref == c).astype(np.float32) * 10 for c in range(3)]))
    out = export_prediction(logits, pprops, plans, conf, lm, tmp_path / "out" / "img.nii.gz", save_probabilities=True)
    got = sitk.ReadImage(str(out))
    src = sitk.ReadImage(str(lab_file))
    assert got.GetSize() == src.GetSize()
    assert np.allclose(got.GetSpacing(), src.GetSpacing()) and np.allclose(got.GetOrigin(), src.GetOrigin())
    assert np.allclose(got.GetDirection(), src.GetDirection())
    pred = sitk.GetArrayFromImage(got)
    agreement = (pred == seg[0]).mean()
    assert agreement == 1.0 if exact else agreement > 0.97
    probs = np.load(tmp_path / "out" / "img.npz")["probabilities"]
    assert probs.shape == (3, *seg.shape[1:]) and np.allclose(probs.sum(0), 1.0, atol=1e-5)
    assert (probs.argmax(0) == pred).mean() > 0.999


def test_predict_and_evaluate_commands(tmp_path, capsys):
    from longnet.cli.evaluate import main as evaluate_main
    from longnet.cli.predict import main as predict_main

    ds = make_raw_dataset(tmp_path / "raw", n_cases=3, labels={"background": 0, "a": 1, "b": 2},
                          spacing=(1.0, 1.0, 2.0), subjects={"s1": ["s1_v0", "s1_v1"], "s2": ["s2_v0"]})
    dj = json.loads((ds / "dataset.json").read_text())
    model = make_model_folder(tmp_path / "results", dj, tiny_plans(spacing=(2.0, 0.8, 1.0), patch=(8, 16, 16)),
                              folds=(0, 1))
    out = tmp_path / "pred"
    rc = predict_main(["-i", str(ds / "imagesTr"), "-o", str(out), "-m", str(model), "-device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.glob("*.nii.gz"))
    assert files == ["s1_v0.nii.gz", "s1_v1.nii.gz", "s2_v0.nii.gz"]
    for name in files:
        a, b = sitk.ReadImage(str(out / name)), sitk.ReadImage(str(ds / "imagesTr" / name.replace(".nii", "_0000.nii")))
        assert a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(a))) <= {0, 1, 2}
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    os.remove(out / "s2_v0.nii.gz")
    assert predict_main(["-i", str(ds / "imagesTr"), "-o", str(out), "-m", str(model), "-device", "cpu",
                         "-f", "0", "--continue_prediction", "--disable_tta"]) == 0
    assert (out / "s2_v0.nii.gz").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items() if p.name != "s2_v0.nii.gz")

    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps({"s1": ["s1_v0", "s1_v1"], "s2": ["s2_v0"]}))
    assert evaluate_main([str(ds / "labelsTr"), str(out), "-djfile", str(ds / "dataset.json"),
                          "--patients", str(patients), "--no_hd95"]) == 0  # HD95 (MONAI) is tested elsewhere
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"metric_per_case", "mean", "median", "foreground_mean", "longitudinal"}
    assert set(summary["mean"]) == {"1", "2"} and len(summary["metric_per_case"]) == 3
    assert {"Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref", "volume_pred"} <= set(summary["mean"]["1"])
    assert summary["longitudinal"]["num_pairs"] == 1
    # a copy of the GT as the prediction: perfect scores, identical ASPC for prediction and reference (the GT folder
    # against itself is refused: see test_bad_evaluation_inputs.py)
    shutil.copytree(ds / "labelsTr", tmp_path / "gt_copy")
    assert evaluate_main([str(ds / "labelsTr"), str(tmp_path / "gt_copy"), "-djfile", str(ds / "dataset.json"),
                          "--patients", str(patients), "-o", str(tmp_path / "self.json"), "--no_hd95"]) == 0
    self_sum = json.loads((tmp_path / "self.json").read_text())
    assert self_sum["foreground_mean"]["Dice"] == 1.0 and self_sum["foreground_mean"]["FP"] == 0
    pair = self_sum["longitudinal"]["per_subject"]["s1"][0]["metrics"]["1"]
    assert pair["ASPC_pred"] == pair["ASPC_ref"]


def test_predict_errors_are_one_line(tmp_path, capsys):
    from longnet.cli.predict import main as predict_main

    assert predict_main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("longnet: error:")
    bad = make_model_folder(tmp_path / "r", DJ, tiny_plans())
    torch.save({"network_weights": {"x": torch.zeros(1)}}, bad / "fold_0" / "checkpoint_final.pth")
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "c_0000.nii.gz", np.ones((4, 4, 4), np.float32))
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-m", str(bad)]) == 1
    assert "does not match the network" in capsys.readouterr().err
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "-d", "990", "-c", "3d_fullres",
                         "-tr", "LongRepPretrainer"]) == 1
    assert "LongRepPretrainer only pretrains" in capsys.readouterr().err


def test_predict_files_2d_configuration(tmp_path):
    """nnU-Net's 2d configuration on 3D volumes: slice-wise tiles, exported back as one 3D label map."""
    from longnet.inference.predictor import Predictor

    plans = tiny_plans(patch=(16, 16))
    conf = plans["configurations"].pop("3d_fullres")
    conf["spacing"] = [1.0, 1.0]
    arch = conf["architecture"]["arch_kwargs"]
    arch.update(conv_op="torch.nn.modules.conv.Conv2d", norm_op="torch.nn.modules.instancenorm.InstanceNorm2d",
                kernel_sizes=[[3, 3]] * 2, strides=[[1, 1], [2, 2]])
    plans["configurations"]["2d"] = conf
    folder = tmp_path / "T__tinyPlans__2d"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(DJ))
    net = build_network_from_architecture(conf["architecture"], 1, 3, deep_supervision=False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "T", "inference_allowed_mirroring_axes": [0, 1]},
               folder / "fold_0" / "checkpoint_final.pth")
    img_file, _ = _case_with_geometry(tmp_path, (1.0, 1.0, 3.0))
    predictor = Predictor.from_model_folder(folder, device="cpu")
    assert predictor.configuration_name == "2d" and predictor.mirror_axes == (0, 1)
    written = predictor.predict_files([("img", [img_file])], tmp_path / "out2d")
    got, src = sitk.ReadImage(str(written[0])), sitk.ReadImage(str(img_file))
    assert got.GetSize() == src.GetSize() and np.allclose(got.GetOrigin(), src.GetOrigin())


def test_predictor_from_trainer_uses_live_network():
    from types import SimpleNamespace

    from longnet.inference.predictor import Predictor

    plans = tiny_plans(patch=(8, 8, 8))
    net = build_network_from_architecture(plans["configurations"]["3d_fullres"]["architecture"], 1, 3,
                                          deep_supervision=True)  # training network: list output
    net.train()
    trainer = SimpleNamespace(network=net, plans=Plans(plans), configuration_name="3d_fullres", dataset_json=DJ,
                              device=torch.device("cpu"), inference_allowed_mirroring_axes=(0, 1, 2))
    predictor = Predictor.from_trainer(trainer, use_mirroring=False)
    logits = predictor.predict_preprocessed(np.random.default_rng(0).normal(size=(1, 6, 10, 9)).astype(np.float32))
    assert logits.shape == (3, 6, 10, 9) and logits.dtype == torch.float32
    assert net.training  # the trainer's mode is restored


@pytest.mark.parametrize("target_spacing", [None, (2.0, 1.0, 1.0), (1.5, 0.6, 0.7)])
def test_device_segmentation_agrees_with_the_nnunet_resampling_path(tmp_path, target_spacing):
    """The GPU export path (torch resampling + argmax, run here on the CPU) against nnU-Net's numpy path."""
    from scipy.ndimage import gaussian_filter

    from longnet.imaging.case_geometry import CaseGeometry
    from longnet.inference.export import convert_logits, segmentation_on_device

    img_file, _ = _case_with_geometry(tmp_path, (1.0, 0.8, 2.5))  # z 2.5 vs 0.8 in-plane: separate z
    data, props = read_image_files([img_file])
    plans = Plans(tiny_plans(spacing=target_spacing or [props["spacing"][i] for i in (0, 1, 2)]))
    conf = plans.configuration("3d_fullres")
    pdata, _, pprops = preprocess_case(data, None, props, plans, "3d_fullres", DJ)
    rng = np.random.default_rng(0)
    logits = np.stack([gaussian_filter(rng.normal(size=pdata.shape[1:]), 2) for _ in range(3)]).astype(np.float32)
    lm = LabelManager.from_dataset_json(DJ)
    ref, _ = convert_logits(torch.from_numpy(logits), pprops, plans, conf, lm)
    cropped = segmentation_on_device(torch.from_numpy(logits), pprops, plans, conf, lm)
    assert (cropped.shape != logits.shape[1:]) == (target_spacing is not None)  # resampled unless same spacing
    got = CaseGeometry.of(pprops, plans, conf).uncrop(cropped)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert (got == ref).mean() >= 0.999


def test_predictor_segment_on_device_writes_the_same_files(tmp_path):
    from longnet.inference.predictor import Predictor

    plans = tiny_plans(spacing=(2.0, 1.0, 1.0))
    conf = plans["configurations"]["3d_fullres"]
    folder = tmp_path / "T__tinyPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(DJ))
    torch.manual_seed(0)
    net = build_network_from_architecture(conf["architecture"], 1, 3, deep_supervision=False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "T", "inference_allowed_mirroring_axes": [0]},
               folder / "fold_0" / "checkpoint_final.pth")
    img_file, _ = _case_with_geometry(tmp_path, (1.0, 0.8, 2.5))
    outs = []
    for on_device in (False, True):
        predictor = Predictor.from_model_folder(folder, device="cpu", segment_on_device=on_device)
        outs.append(sitk.GetArrayFromImage(sitk.ReadImage(str(
            predictor.predict_files([("img", [img_file])], tmp_path / f"out{on_device}")[0]))))
    assert outs[0].shape == outs[1].shape and (outs[0] == outs[1]).mean() >= 0.999
