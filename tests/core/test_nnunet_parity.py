"""A model folder trained by nnU-Net 2.8.1 predicts through `longnet_predict` with nnU-Net's own label maps.

Reference: ../shared/reference/nnunetv2-2.8.1/Dataset004_Hippocampus (fold-0 model of 4 training iterations and
nnU-Net's predictions with mirroring TTA, step 0.5). The default runs case 019 (two overlapping tiles along z,
so the Gaussian blending is exercised); LONGNET_PARITY_ALL=1 runs all six cases. Measured: 100% on five cases,
99.998% (1 voxel) on 033, where batching the mirrored copies into one network call changes conv rounding.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REF = SHARED / "reference" / "nnunetv2-2.8.1" / "Dataset004_Hippocampus"
MODEL = REF / "model" / "nnUNetTrainer_cpubench__nnUNetPlans__3d_fullres"
MODELS = {"3d_fullres": (MODEL, REF / "predictions_tta"),
          "2d": (REF / "model" / "nnUNetTrainer_cpubench__nnUNetPlans__2d", REF / "predictions_tta_2d")}
IMAGES = SHARED / "data" / "Task04_Hippocampus" / "imagesTr"
ALL_CASES = ["017", "019", "033", "035", "037", "049"]


@pytest.mark.skipif(not (MODEL.is_dir() and IMAGES.is_dir()), reason="shared nnU-Net reference data not available")
@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_nnunet_model_folder_parity(tmp_path, capsys, configuration):
    from longnet.cli.predict import main as predict_main

    model, reference = MODELS[configuration]
    cases = ALL_CASES if os.environ.get("LONGNET_PARITY_ALL") else ["019"]
    inp = tmp_path / "in"
    inp.mkdir()
    for c in cases:  # MSD files have no channel suffix; nnU-Net's input layout wants {case}_0000
        (inp / f"hippocampus_{c}_0000.nii.gz").symlink_to(IMAGES / f"hippocampus_{c}.nii.gz")
    t0 = time.perf_counter()
    rc = predict_main(["-i", str(inp), "-o", str(tmp_path / "out"), "-m", str(model), "-f", "0", "-device", "cpu"])
    elapsed = time.perf_counter() - t0
    assert rc == 0, capsys.readouterr().err
    for c in cases:
        ours = sitk.ReadImage(str(tmp_path / "out" / f"hippocampus_{c}.nii.gz"))
        ref = sitk.ReadImage(str(reference / f"hippocampus_{c}.nii.gz"))
        assert ours.GetSize() == ref.GetSize()
        assert np.allclose(ours.GetSpacing(), ref.GetSpacing()) and np.allclose(ours.GetOrigin(), ref.GetOrigin())
        assert np.allclose(ours.GetDirection(), ref.GetDirection())
        agreement = float((sitk.GetArrayFromImage(ours) == sitk.GetArrayFromImage(ref)).mean())
        print(f"{configuration} hippocampus_{c}: voxel agreement with nnU-Net {agreement:.6f}")
        assert agreement >= 0.999
    print(f"{len(cases)} case(s) predicted in {elapsed:.1f} s")
