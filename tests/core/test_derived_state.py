"""Derived files follow the raw dataset: adding or changing patientsTr.json / visitsTr.csv (or the case list) and
rerunning `longnet_plan_and_preprocess` rebuilds subjects.json, visits.json, the preprocessed cases' properties and
a splits_final.json that longnet generated; a user's splits file that now splits a subject is refused before
anything is written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from raw_datasets import make_raw_dataset
from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
from longnet.data.dataset_index import DatasetIndex
from longnet.errors import LongnetError
from reliability_helpers import DATASET, assert_message, assert_one_error, set_roots, snapshot

ARGS = ["-d", "999", "-c", "3d_fullres", "-np", "1"]
CASES = [f"case_{i:03d}" for i in range(8)]
SUBJECTS = {"s1": CASES[0:3], "s2": CASES[3:5], "s3": CASES[5:7], "s4": CASES[7:8]}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    return set_roots(monkeypatch, tmp_path)


def _add_subject_table(raw: Path, subjects: dict = SUBJECTS) -> dict[str, float]:
    (raw / "patientsTr.json").write_text(json.dumps(subjects))
    days = {c: 30.0 * i for cs in subjects.values() for i, c in enumerate(cs)}
    with open(raw / "visitsTr.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "days"])
        w.writerows([c, d] for c, d in days.items())
    return days


def _leaks(splits: list[dict], subjects: dict) -> list[str]:
    subject_of = {c: s for s, cs in subjects.items() for c in cs}
    return [subject_of[c] for fold in splits for c in fold["train"]
            if subject_of[c] in {subject_of[v] for v in fold["val"]}]


def _read(path: Path):
    return json.loads(path.read_text())


def test_subject_table_added_later_rebuilds_derived_files(roots):
    raw = make_raw_dataset(roots["raw"], n_cases=8)
    assert main_plan_and_preprocess(ARGS) == 0
    pre = roots["pre"] / DATASET
    assert len(_read(pre / "subjects.json")) == 8
    first_splits = _read(pre / "splits_final.json")
    assert _leaks(first_splits, SUBJECTS)  # case-level folds: would leak once the cases are grouped

    days = _add_subject_table(raw)
    assert main_plan_and_preprocess(ARGS) == 0
    assert _read(pre / "subjects.json") == SUBJECTS
    visits = _read(pre / "visits.json")
    assert {c: v["days"] for c, v in visits.items()} == days and visits["case_001"]["subject"] == "s1"
    splits = _read(pre / "splits_final.json")
    assert splits != first_splits and _leaks(splits, SUBJECTS) == []
    assert sorted(c for fold in splits for c in fold["val"]) == CASES  # every case validated once
    folder = pre / "nnUNetPlans_3d_fullres"
    props = _read(folder / "case_006.json")
    assert (props["subject"], props["days"], props["visit_index"]) == ("s3", 30.0, 1)
    index = DatasetIndex.load(pre, "nnUNetPlans_3d_fullres")  # what training reads
    assert index.subject_of("case_002") == "s1" and index.subjects["s2"] == ["case_003", "case_004"]


def test_changed_days_only_refresh_properties_not_arrays(roots):
    raw = make_raw_dataset(roots["raw"], n_cases=8)
    _add_subject_table(raw)
    assert main_plan_and_preprocess(ARGS) == 0
    folder = roots["pre"] / DATASET / "nnUNetPlans_3d_fullres"
    arrays = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.b2nd")}
    (raw / "visitsTr.csv").write_text((raw / "visitsTr.csv").read_text().replace("case_001,30.0", "case_001,45.5"))
    assert main_plan_and_preprocess(ARGS) == 0
    assert _read(folder / "case_001.json")["days"] == 45.5
    assert _read(roots["pre"] / DATASET / "visits.json")["case_001"]["days"] == 45.5
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.b2nd")} == arrays  # nothing recomputed


def test_splits_from_before_the_record_still_count_as_generated(roots):
    """A folder written before derived_inputs.json existed: its splits equal what longnet generates from the old
    subjects.json, so they are regenerated too."""
    raw = make_raw_dataset(roots["raw"], n_cases=8)
    assert main_plan_and_preprocess(ARGS) == 0
    (roots["pre"] / DATASET / "derived_inputs.json").unlink()
    _add_subject_table(raw)
    assert main_plan_and_preprocess(ARGS) == 0
    assert _leaks(_read(roots["pre"] / DATASET / "splits_final.json"), SUBJECTS) == []


def _user_splits(pre: Path) -> list[dict]:
    """A hand-written 2-fold split, case-level: fine while every case is its own subject."""
    splits = [{"train": CASES[4:], "val": CASES[:4]}, {"train": CASES[:4], "val": CASES[4:]}]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return splits


def test_user_splits_are_kept_while_they_keep_subjects_together(roots):
    raw = make_raw_dataset(roots["raw"], n_cases=8)
    assert main_plan_and_preprocess(ARGS) == 0
    pre = roots["pre"] / DATASET
    splits = _user_splits(pre)
    _add_subject_table(raw, {"a": CASES[:4], "b": CASES[4:]})
    assert main_plan_and_preprocess(ARGS) == 0
    assert _read(pre / "splits_final.json") == splits  # respected, not regenerated


def test_user_splits_that_now_split_a_subject_are_refused_before_writing(roots, tmp_path, capsys):
    raw = make_raw_dataset(roots["raw"], n_cases=8)
    assert main_plan_and_preprocess(ARGS) == 0
    pre = roots["pre"] / DATASET
    _user_splits(pre)
    _add_subject_table(raw)  # s2 = case_003 (val of fold 0) + case_004 (train of fold 0)
    before_pre, before_raw = snapshot(pre), snapshot(raw)
    capsys.readouterr()
    assert main_plan_and_preprocess(ARGS) == 1
    err = capsys.readouterr().err
    assert_one_error(err)
    assert_message(err, tmp_path, "splits_final.json", "fold 0", "subject 's2'", "both sides")
    assert snapshot(pre) == before_pre and snapshot(raw) == before_raw


def test_training_refuses_user_splits_that_split_a_subject(tmp_path):
    from longnet.training.launch import load_split

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "subjects.json").write_text(json.dumps({"s1": ["a", "b"], "s2": ["c"], "s3": ["d"]}))
    (pre / "splits_final.json").write_text(json.dumps([{"train": ["a", "c"], "val": ["b", "d"]}]))
    with pytest.raises(LongnetError, match="subject 's1' on both sides"):
        load_split(pre, 0, ["a", "b", "c", "d"], create=False)


def test_removed_case_leaves_no_stale_preprocessed_files(roots):
    raw = make_raw_dataset(roots["raw"], n_cases=8)
    assert main_plan_and_preprocess(ARGS) == 0
    pre = roots["pre"] / DATASET
    fingerprint = _read(pre / "dataset_fingerprint.json")
    for p in [raw / "imagesTr" / "case_007_0000.nii.gz", raw / "labelsTr" / "case_007.nii.gz"]:
        p.unlink()
    dj = _read(raw / "dataset.json")
    dj["numTraining"] = 7
    (raw / "dataset.json").write_text(json.dumps(dj))
    assert main_plan_and_preprocess(ARGS) == 0
    assert not list((pre / "nnUNetPlans_3d_fullres").glob("case_007*"))
    assert not (pre / "gt_segmentations" / "case_007.nii.gz").exists()
    assert "case_007" not in _read(pre / "visits.json")
    assert all("case_007" not in fold["train"] + fold["val"] for fold in _read(pre / "splits_final.json"))
    assert len(_read(pre / "dataset_fingerprint.json")["spacings"]) == 7 != len(fingerprint["spacings"])
    assert _read(pre / "dataset.json")["numTraining"] == 7


def test_unchanged_rerun_rewrites_nothing(roots):
    make_raw_dataset(roots["raw"], n_cases=6)
    assert main_plan_and_preprocess(ARGS) == 0
    pre = roots["pre"] / DATASET
    stamps = {p: p.stat().st_mtime_ns for p in pre.rglob("*") if p.is_file() and p.suffix != ".json"
              or p.name in ("subjects.json", "visits.json", "splits_final.json", "dataset_fingerprint.json")}
    assert main_plan_and_preprocess(ARGS) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_changed_subjects_redo_the_alignment_of_the_subjects_they_touch(roots):
    """With --align a subject's visits are registered to its first visit and cropped with one box: a subject whose
    visit list changed is redone whole; the others keep their arrays."""
    raw = make_raw_dataset(roots["raw"], subjects={"s1": ["a", "b"], "s2": ["c", "d"], "s3": ["e", "f"]},
                           shape=(20, 24, 16))
    args = ["-d", "999", "-c", "3d_fullres", "-np", "1", "--align", "rigid"]
    assert main_plan_and_preprocess(args) == 0
    folder = next((roots["pre"] / DATASET).glob("nnUNetPlans_3d_fullres*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.b2nd")}
    (raw / "patientsTr.json").write_text(json.dumps({"s1": ["a"], "s2": ["b", "c", "d"], "s3": ["e", "f"]}))
    assert main_plan_and_preprocess(args) == 0
    redone = sorted({n.split(".")[0].split("_")[0] for n, t in stamps.items() if (folder / n).stat().st_mtime_ns != t})
    assert redone == ["a", "b", "c", "d"]
    props = {c: _read(folder / f"{c}.json") for c in "abcd"}
    assert [props[c]["alignment"]["reference_case"] for c in "abcd"] == ["a", "b", "b", "b"]
    assert props["c"]["subject_visits"] == ["b", "c", "d"] and props["c"]["visit_index"] == 1


def test_preprocess_alone_also_refreshes_subjects(roots):
    from longnet.cli.plan_and_preprocess import main_preprocess

    raw = make_raw_dataset(roots["raw"], n_cases=8)
    assert main_plan_and_preprocess(ARGS) == 0
    _add_subject_table(raw)
    assert main_preprocess(["-d", "999", "-c", "3d_fullres", "-np", "1"]) == 0
    pre = roots["pre"] / DATASET
    assert _read(pre / "subjects.json") == SUBJECTS
    assert _leaks(_read(pre / "splits_final.json"), SUBJECTS) == []
