"""Dataset integrity verification: clean datasets pass, every problem is collected, edge cases of the readers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import make_raw_dataset, write_image
from longnet.cli.common import cli_main, run_cli
from longnet.dataset.integrity import check_dataset, dataset_dimension, verify_dataset_integrity
from longnet.dataset.io import geometry_mismatch, read_image_files, read_seg_file
from longnet.dataset.nifti_raw import nonfinite_counts, truncation_problem
from longnet.dataset.raw import RawDataset
from longnet.errors import DatasetError, IntegrityError, LongnetError
from longnet.utils.files import load_json

ZYX = (10, 12, 8)


def test_clean_dataset_passes_and_returns_raw(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=3, n_channels=2)
    raw = check_dataset(folder)
    assert isinstance(raw, RawDataset) and sorted(raw.cases) == ["case_000", "case_001", "case_002"]


def test_unlabelled_visit_is_not_a_problem(tmp_path):
    folder = make_raw_dataset(tmp_path, subjects={"s1": ["a", "b", "c"]}, unlabelled={"b"},
                              visits={"a": 0, "b": 30, "c": 95.5})
    raw = check_dataset(folder)
    assert raw.unlabelled_cases == ["b"] and raw.cases["c"].days == 95.5


def test_every_problem_is_collected_in_case_order(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=4, num_training=5)
    write_image(folder / "imagesTr" / "case_001_0000.nii.gz", np.zeros(ZYX, np.float32))
    write_image(folder / "labelsTr" / "case_002.nii.gz", np.full(ZYX, 4, np.uint8))
    write_image(folder / "labelsTr" / "case_003.nii.gz", np.zeros(ZYX, np.uint8), spacing=[2, 2, 2])
    (folder / "imagesTr" / "case_000_0000.nii.gz").write_bytes(b"garbage")
    with pytest.raises(IntegrityError) as exc:
        check_dataset(folder, num_processes=2)
    names = [Path(p).name for p, _ in exc.value.problems]
    assert names == ["dataset.json", "case_000_0000.nii.gz", "case_001_0000.nii.gz", "case_002.nii.gz",
                     "case_003.nii.gz"]
    text = str(exc.value)
    assert "5 problem(s)" in text and text.count("\n") == 5  # one line per problem


def test_threads_and_inline_agree(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=5)
    write_image(folder / "labelsTr" / "case_003.nii.gz", np.full(ZYX, 9, np.uint8))
    raw = RawDataset(folder)
    assert verify_dataset_integrity(raw, num_processes=1) == verify_dataset_integrity(raw, num_processes=3)


def test_unreadable_case_does_not_hide_its_label_problem(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=2, n_channels=2)
    (folder / "imagesTr" / "case_000_0000.nii.gz").write_bytes(b"x")
    write_image(folder / "labelsTr" / "case_000.nii.gz", np.full(ZYX, 2, np.uint8), spacing=[3, 1, 1])
    problems = verify_dataset_integrity(RawDataset(folder))
    msgs = [m for _, m in problems]
    assert any("unreadable" in m for m in msgs)
    assert any("spacing" in m and "case_000_0001" in m for m in msgs)  # compared against the readable channel
    assert any("label values [2]" in m for m in msgs)


def test_region_and_ignore_labels_define_valid_values(tmp_path):
    labels = {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}
    folder = make_raw_dataset(tmp_path, n_cases=2, labels=labels, extra_json={"regions_class_order": [1, 2]})
    assert verify_dataset_integrity(RawDataset(folder)) == []
    write_image(folder / "labelsTr" / "case_000.nii.gz", np.full(ZYX, 4, np.uint8))
    assert [m for _, m in verify_dataset_integrity(RawDataset(folder))] == [
        "label values [4] are not declared in dataset.json 'labels' (allowed: [0, 1, 2, 3])"]


def test_2d_dataset_and_majority_dimension(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=3, shape=(8, 12))
    raw = RawDataset(folder)
    assert dataset_dimension(raw) == 2 and verify_dataset_integrity(raw) == []
    write_image(folder / "imagesTr" / "case_002_0000.nii.gz", np.ones(ZYX, np.float32))
    problems = verify_dataset_integrity(RawDataset(folder))
    assert [Path(p).name for p, _ in problems] == ["case_002_0000.nii.gz"] and "3D but the dataset is 2D" in problems[0][1]


def test_nan_in_non_nifti_format(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=2, file_ending=".mha")
    arr = np.random.default_rng(0).normal(size=ZYX).astype(np.float32)
    arr[0, 0, 0] = np.nan
    write_image(folder / "imagesTr" / "case_001_0000.mha", arr)
    problems = verify_dataset_integrity(RawDataset(folder))
    assert problems == [(str(folder / "imagesTr" / "case_001_0000.mha"), "image contains 1 NaN voxel(s)")]


# -- readers ---------------------------------------------------------------------------------------------------
def test_truncated_nifti_is_unreadable(tmp_path):
    for name in ("a.nii.gz", "a.nii"):
        p = write_image(tmp_path / name, np.random.default_rng(0).normal(size=ZYX).astype(np.float32))
        assert truncation_problem(p) is None
        p.write_bytes(p.read_bytes()[:-200])
        assert "truncated" in truncation_problem(p)
        with pytest.raises(DatasetError, match="unreadable image file.*truncated"):
            read_image_files([p])


def test_nifti_nonfinite_counts_from_raw_bytes(tmp_path):
    arr = np.ones(ZYX, np.float64)
    arr[1, 2, 3], arr[2, 2, 2], arr[3, 3, 3] = np.nan, np.inf, -np.inf
    p = write_image(tmp_path / "f.nii.gz", arr)
    assert nonfinite_counts(p) == (1, 2)
    assert nonfinite_counts(write_image(tmp_path / "i.nii.gz", np.ones(ZYX, np.int16))) is None


def test_read_seg_file_rejects_fractions_and_huge_values(tmp_path):
    with pytest.raises(DatasetError, match="non-integer"):
        read_seg_file(write_image(tmp_path / "f.nii.gz", np.full(ZYX, 0.5, np.float32)))
    with pytest.raises(DatasetError, match="out of range"):
        read_seg_file(write_image(tmp_path / "b.nii.gz", np.full(ZYX, 70000, np.int32)))


def test_geometry_mismatch_lists_every_difference():
    g = {"spacing": [1, 1, 1], "origin": [0, 0, 0], "direction": list(np.eye(3).ravel())}
    h = {"spacing": [1, 1, 2], "origin": [0, 0, 0], "direction": list(np.eye(3).ravel())}
    assert geometry_mismatch((2, 3, 4), g, (2, 3, 4), g) is None
    msg = geometry_mismatch((2, 3, 4), g, (2, 3, 5), h)
    assert msg.startswith("size (5, 3, 2) vs (4, 3, 2); spacing") and "origin" not in msg


def test_load_json_tolerates_bom_and_reports_binary(tmp_path):
    p = tmp_path / "a.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert load_json(p) == {"a": 1}
    p.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_json(p)


def test_raw_subject_name_colliding_with_unlisted_case(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=3)
    (folder / "patientsTr.json").write_text(json.dumps({"case_002": ["case_000", "case_001"]}))
    with pytest.raises(DatasetError, match="'case_002' is not listed but a subject has the same name"):
        RawDataset(folder)


def test_visits_csv_with_bom_and_extra_columns(tmp_path):
    folder = make_raw_dataset(tmp_path, subjects={"s": ["a", "b"]})
    (folder / "visitsTr.csv").write_bytes(b"\xef\xbb\xbfcase,days,score,group\na,0,1.5,x\nb,10,,y\n")
    raw = RawDataset(folder)
    assert raw.cases["b"].days == 10.0 and raw.cases["a"].meta == {"score": 1.5, "group": "x"}
    assert raw.cases["b"].meta["score"] is None


# -- CLI wrapper -------------------------------------------------------------------------------------------------
def test_run_cli_turns_errors_into_exit_codes(capsys):
    def bad(argv):
        raise DatasetError("broken", "/x/dataset.json")

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(bad, []) == 1
    assert capsys.readouterr().err.strip() == "longnet: error: /x/dataset.json: broken"
    assert run_cli(interrupted, []) == 130
    assert run_cli(lambda argv: None, []) == 0
    assert run_cli(lambda argv: 3, []) == 3

    @cli_main
    def main(argv=None):
        import argparse
        argparse.ArgumentParser().parse_args(argv)
        raise LongnetError("nope")

    assert main(["--unknown"]) == 2
    assert main([]) == 1 and "longnet: error: nope" in capsys.readouterr().err
