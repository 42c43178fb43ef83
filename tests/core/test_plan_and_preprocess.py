"""Foundation I: plans, preprocessed arrays and splits equal nnU-Net 2.8.1's on the shared real data;
longitudinal datasets keep subjects together; an interrupted run resumes to identical bytes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import SHARED_DATA, make_raw_dataset, tcia_raw_dataset
from longnet.cli.convert import main as convert_main
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.io.storage import load_case

REFERENCE = SHARED_DATA.parent / "reference" / "nnunetv2-2.8.1"
needs_shared = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference not available")


def _assert_plans_equal(ours: dict, ref: dict) -> None:
    assert set(ours["configurations"]) == set(ref["configurations"])
    for name, conf in ref["configurations"].items():
        mine = ours["configurations"][name]
        for key in ("spacing", "patch_size", "batch_size", "median_image_size_in_voxels", "normalization_schemes",
                    "use_mask_for_norm", "batch_dice", "data_identifier"):
            assert mine[key] == conf[key], (name, key, mine[key], conf[key])
        assert mine["architecture"] == conf["architecture"], name
    for key in ("transpose_forward", "transpose_backward", "original_median_spacing_after_transp",
                "original_median_shape_after_transp"):
        assert ours[key] == ref[key], key
    for ch, stats in ref["foreground_intensity_properties_per_channel"].items():
        for k, v in stats.items():
            assert ours["foreground_intensity_properties_per_channel"][ch][k] == pytest.approx(v, rel=1e-6), (ch, k)


@needs_shared
def test_hippocampus_matches_nnunet(roots):
    assert convert_main(["-i", str(SHARED_DATA / "Task04_Hippocampus"), "-overwrite_id", "4", "-np", "2"]) == 0
    assert main_plan_and_preprocess(["-d", "4", "-np", "2"]) == 0  # nnU-Net's default: 2d, 3d_fullres (+ lowres)
    pre = roots["pre"] / "Dataset004_Hippocampus"
    ref = REFERENCE / "Dataset004_Hippocampus"
    _assert_plans_equal(json.loads((pre / "nnUNetPlans.json").read_text()),
                        json.loads((ref / "nnUNetPlans.json").read_text()))
    assert json.loads((pre / "splits_final.json").read_text()) == json.loads((ref / "splits_final.json").read_text())
    fp, ref_fp = (json.loads((d / "dataset_fingerprint.json").read_text()) for d in (pre, ref))
    assert fp["shapes_after_crop"] == ref_fp["shapes_after_crop"] and fp["spacings"] == ref_fp["spacings"]
    import blosc2

    for identifier in ("nnUNetPlans_3d_fullres", "nnUNetPlans_2d"):
        for f in sorted((ref / identifier).glob("*_seg.b2nd")):
            case = f.name[: -len("_seg.b2nd")]
            data, seg, props = load_case(pre / identifier, case)
            ref_data = blosc2.open(str(ref / identifier / f"{case}.b2nd"))[...]
            ref_seg = blosc2.open(str(f))[...]
            assert data.shape == ref_data.shape and np.abs(data - ref_data).max() <= 1e-3, (identifier, case)
            assert np.array_equal(seg, ref_seg), (identifier, case)


def _tcia_raw(root: Path, with_patients: bool) -> Path:
    """Dataset005 with nnU-Net's reference dataset.json (the parity target)."""
    return tcia_raw_dataset(root, "Dataset005_TCIAProgT1", dataset_json=REFERENCE / "Dataset005_TCIAProgT1" /
                            "dataset.json", with_patients=with_patients)


@needs_shared
def test_tcia_anisotropic_plans_match_nnunet(roots):
    _tcia_raw(roots["raw"], with_patients=False)
    assert main_plan_and_preprocess(["-d", "5", "--no_pp", "-np", "2"]) == 0
    ours = json.loads((roots["pre"] / "Dataset005_TCIAProgT1" / "nnUNetPlans.json").read_text())
    ref = json.loads((REFERENCE / "Dataset005_TCIAProgT1" / "nnUNetPlans.json").read_text())
    _assert_plans_equal(ours, ref)


@needs_shared
def test_tcia_longitudinal_splits_keep_subjects_together(roots):
    _tcia_raw(roots["raw"], with_patients=True)
    assert main_plan_and_preprocess(["-d", "5", "-np", "2"]) == 0  # default configurations, 2d included
    pre = roots["pre"] / "Dataset005_TCIAProgT1"
    _, seg2d, _ = load_case(pre / "nnUNetPlans_2d", "PGBM-001_tp1")
    assert seg2d.shape[1] == 25  # the 2d configuration keeps the 6.5 mm axis and resamples only in-plane
    splits = json.loads((pre / "splits_final.json").read_text())
    subjects = json.loads((pre / "subjects.json").read_text())
    assert len(subjects) == 4 and len(splits) == 4
    for fold in splits:
        for cases in subjects.values():
            assert set(cases) <= set(fold["train"]) or set(cases) <= set(fold["val"])
    visits = json.loads((pre / "visits.json").read_text())
    assert visits["PGBM-001_tp2"]["days"] == 135 and visits["PGBM-001_tp2"]["subject"] == "PGBM-001"
    data, seg, props = load_case(pre / "nnUNetPlans_3d_fullres", "PGBM-001_tp1")
    # in-plane resampled 1.375 -> 1.1172 mm, the 6.5 mm axis kept (separate-z)
    assert data.shape[1:] == (25, round(160 * 1.375 / 1.1172), round(130 * 1.375 / 1.1172))


def test_interrupted_preprocessing_resumes_identically(roots, tmp_path):
    make_raw_dataset(roots["raw"], n_cases=6, name="Dataset201_Resume", shape=(20, 24, 16))
    args = ["-d", "201", "-c", "3d_fullres", "-np", "1"]
    assert main_plan_and_preprocess(args) == 0
    out = roots["pre"] / "Dataset201_Resume" / "nnUNetPlans_3d_fullres"
    reference = {p.name: p.read_bytes() for p in out.iterdir()}
    # simulate a kill midway: one case fully missing, one with data but no properties, a stale temp file
    for name in ("case_002.json", "case_002.b2nd", "case_002_seg.b2nd", "case_002_locations.npz", "case_004.json"):
        (out / name).unlink()
    (out / ".case_005.b2nd.abc.tmp.b2nd").write_bytes(b"partial")
    assert main_plan_and_preprocess(args) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == reference


def test_kill_during_preprocessing_then_rerun(roots):
    make_raw_dataset(roots["raw"], n_cases=10, name="Dataset202_Kill", shape=(24, 24, 20))
    code = ("import sys,os,signal\nfrom longnet.io import storage\norig=storage.save_case\nn=[0]\n"
            "def k(*a,**kw):\n    n[0]+=1\n    orig(*a,**kw)\n    if n[0]==4: os.kill(os.getpid(), signal.SIGKILL)\n"
            "storage.save_case=k\nimport longnet.preprocessing.run as r\nr.save_case=k\n"
            "from longnet.cli.plan_and_preprocess import main_plan_and_preprocess as m\n"
            "sys.exit(m(['-d','202','-c','3d_fullres','-np','1']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    out = roots["pre"] / "Dataset202_Kill" / "nnUNetPlans_3d_fullres"
    assert len(list(out.glob("*.json"))) - 1 == 4  # 4 complete cases + plan_fingerprint.json
    assert main_plan_and_preprocess(["-d", "202", "-c", "3d_fullres", "-np", "1"]) == 0
    resumed = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.rmtree(out)
    assert main_plan_and_preprocess(["-d", "202", "-c", "3d_fullres", "-np", "1"]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == resumed


def test_broken_input_aborts_before_writing(roots, capsys):
    folder = make_raw_dataset(roots["raw"], n_cases=5, name="Dataset203_Broken")
    bad = folder / "imagesTr" / "case_003_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    assert main_plan_and_preprocess(["-d", "203", "-c", "3d_fullres", "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "case_003_0000.nii.gz" in err
    assert not (roots["pre"] / "Dataset203_Broken").exists()


def test_fractional_median_shape_is_padded_like_nnunet():
    """An even number of cases gives a median like 15.5: nnU-Net pads 12.5 to 14 (not 12), found on a synthetic
    6-case dataset where nnU-Net 2.8.1 planned [12, 16, 14]."""
    from longnet.planning.topology import pad_to_multiple, pool_and_conv_props

    assert pool_and_conv_props([1.0, 1.0, 1.0], [12, 15.5, 12.5])[3] == [12, 16, 14]
    assert list(pad_to_multiple([12, 16, 14.0], [4, 4, 2])) == [12, 16, 14]
