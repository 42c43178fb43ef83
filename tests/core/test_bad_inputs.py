"""Bad-input corpus: every malformed dataset must be reported with the offending file and a clear reason."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from raw_datasets import make_raw_dataset, write_image
from longnet.dataset.integrity import check_dataset
from longnet.dataset.raw import RawDataset
from longnet.errors import DatasetError, IntegrityError

ZYX = (10, 12, 8)


def problems_of(folder: Path) -> list[tuple[str, str]]:
    """All problems found, whether structural (DatasetError from RawDataset) or content (IntegrityError)."""
    try:
        check_dataset(folder, num_processes=2)
    except IntegrityError as e:
        return e.problems
    except DatasetError as e:
        return [(e.path or "", e.message)]
    return []


def assert_reported(problems, file_name: str, *keywords: str) -> None:
    for path, message in problems:
        text = f"{path}: {message}"
        if (Path(path).name == file_name or file_name in message) and all(k.lower() in text.lower() for k in keywords):
            return
    raise AssertionError(f"no problem naming {file_name!r} with {keywords}; got:\n" +
                         "\n".join(f"  {p}: {m}" for p, m in problems))


# -- mutations: each takes the dataset folder and plants one problem ---------------------------------------------
def _json(folder, fn):
    p = folder / "dataset.json"
    dj = json.loads(p.read_text())
    fn(dj)
    p.write_text(json.dumps(dj))


def _label(folder, arr=None, **geom):
    write_image(folder / "labelsTr" / "case_001.nii.gz", np.zeros(ZYX, np.uint8) if arr is None else arr, **geom)


def _image(folder, arr, name="case_001_0000.nii.gz", **geom):
    write_image(folder / "imagesTr" / name, arr, **geom)


def _noise(shape=ZYX):
    return np.random.default_rng(1).normal(size=shape).astype(np.float32)


def _with_value(value):
    a = _noise()
    a[2, 3, 4] = value
    return a


def _truncate(folder):
    p = folder / "imagesTr" / "case_001_0000.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _csv(folder, text):
    (folder / "visitsTr.csv").write_text(text)


def _patients(folder, obj):
    (folder / "patientsTr.json").write_text(json.dumps(obj))


def _rename(path: Path, new_name: str) -> None:
    path.rename(path.with_name(new_name))


def _duplicate_key_json(folder, name, text):
    (folder / name).write_text(text)


def _copy_case(folder, case, new_case, side="Tr", with_label=True):
    """A copy of `case` under the id `new_case` (in imagesTs/ when side is 'Ts')."""
    (folder / f"images{side}").mkdir(exist_ok=True)
    shutil.copyfile(folder / "imagesTr" / f"{case}_0000.nii.gz", folder / f"images{side}" / f"{new_case}_0000.nii.gz")
    if with_label and side == "Tr":
        shutil.copyfile(folder / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{new_case}.nii.gz")
    if side == "Tr":
        _json(folder, lambda d: d.update(numTraining=d["numTraining"] + 1))


SKEW = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0]

CORPUS = {
    # name: (mutation, make_raw_dataset kwargs, file named, keywords)
    "invalid_json": (lambda f: (f / "dataset.json").write_text("{\"labels\": {"), {},
                     "dataset.json", "not valid json"),
    "binary_json": (lambda f: (f / "dataset.json").write_bytes(b"\xff\xfe\x00garbage\x81"), {},
                    "dataset.json", "not valid json"),
    "json_not_object": (lambda f: (f / "dataset.json").write_text("[1, 2]"), {}, "dataset.json", "json object"),
    "missing_labels": (lambda f: _json(f, lambda d: d.pop("labels")), {}, "dataset.json", "missing", "labels"),
    "missing_channel_names": (lambda f: _json(f, lambda d: d.pop("channel_names")), {},
                              "dataset.json", "missing", "channel_names"),
    "missing_file_ending": (lambda f: _json(f, lambda d: d.pop("file_ending")), {},
                            "dataset.json", "missing", "file_ending"),
    "missing_numTraining": (lambda f: _json(f, lambda d: d.pop("numTraining")), {},
                            "dataset.json", "missing", "numTraining"),
    "numTraining_mismatch": (lambda f: _json(f, lambda d: d.update(numTraining=7)), {},
                             "dataset.json", "numTraining is 7", "4 cases"),
    "non_consecutive_labels": (lambda f: _json(f, lambda d: d.update(labels={"background": 0, "a": 2})), {},
                               "dataset.json", "consecutive"),
    "label_value_undeclared": (lambda f: _label(f, np.full(ZYX, 3, np.uint8)), {},
                               "case_001.nii.gz", "label values [3]", "not declared"),
    "label_non_integer": (lambda f: _label(f, np.full(ZYX, 0.5, np.float32)), {},
                          "case_001.nii.gz", "non-integer", "0.5"),
    "label_nan": (lambda f: _label(f, _with_value(np.nan).round().clip(0, 1)), {}, "case_001.nii.gz", "nan"),
    "label_size": (lambda f: _label(f, np.zeros((10, 12, 9), np.uint8)), {},
                   "case_001.nii.gz", "label geometry", "size (9, 12, 10) vs (8, 12, 10)"),
    "label_spacing": (lambda f: _label(f, spacing=[1.0, 1.0, 2.5]), {}, "case_001.nii.gz", "label geometry", "spacing"),
    "label_origin": (lambda f: _label(f, origin=[0.0, 5.0, 0.0]), {}, "case_001.nii.gz", "label geometry", "origin"),
    "label_direction": (lambda f: _label(f, direction=SKEW), {}, "case_001.nii.gz", "label geometry", "direction"),
    "missing_channel_file": (lambda f: (f / "imagesTr" / "case_001_0001.nii.gz").unlink(), {"n_channels": 2},
                             "case_001_0001.nii.gz", "missing channel"),
    "extra_channel_file": (lambda f: _image(f, _noise(), "case_001_0002.nii.gz"), {"n_channels": 2},
                           "case_001_0002.nii.gz", "channel 0002", "declares 2"),
    "channel_geometry": (lambda f: _image(f, _noise(), "case_001_0001.nii.gz", spacing=[2.0, 1.0, 1.0]),
                         {"n_channels": 2}, "case_001_0001.nii.gz", "channel geometry", "spacing"),
    "nan_voxels": (lambda f: _image(f, _with_value(np.nan)), {}, "case_001_0000.nii.gz", "1 nan"),
    "inf_voxels": (lambda f: _image(f, _with_value(np.inf)), {}, "case_001_0000.nii.gz", "1 inf"),
    "all_zero_image": (lambda f: _image(f, np.zeros(ZYX, np.float32)), {}, "case_001_0000.nii.gz", "empty"),
    "constant_image": (lambda f: _image(f, np.full(ZYX, 7, np.int16)), {}, "case_001_0000.nii.gz", "constant", "7"),
    "2d_in_3d_dataset": (lambda f: _image(f, _noise((12, 8))), {}, "case_001_0000.nii.gz", "2d", "3d"),
    # a (2, z, y, x) array becomes a 3D image with 8 components per voxel (SimpleITK's vector convention)
    "4d_file": (lambda f: _image(f, _noise((2,) + ZYX)), {}, "case_001_0000.nii.gz", "vector image", "8 components"),
    "truncated_nii_gz": (_truncate, {}, "case_001_0000.nii.gz", "unreadable"),
    "random_bytes": (lambda f: (f / "imagesTr" / "case_001_0000.nii.gz").write_bytes(np.random.default_rng(0).bytes(3000)),
                     {}, "case_001_0000.nii.gz", "unreadable"),
    "gzip_of_garbage": (lambda f: (f / "imagesTr" / "case_001_0000.nii.gz").write_bytes(gzip.compress(b"x" * 500)),
                        {}, "case_001_0000.nii.gz", "unreadable"),
    "unreadable_label": (lambda f: (f / "labelsTr" / "case_001.nii.gz").write_bytes(b"not an image"), {},
                         "case_001.nii.gz", "unreadable"),
    "case_id_dotdot": (lambda f: _image(f, _noise(), "case..evil_0000.nii.gz"), {},
                       "case..evil_0000.nii.gz", "invalid case id", ".."),
    "bad_channel_suffix": (lambda f: _image(f, _noise(), "case_009.nii.gz"), {}, "case_009.nii.gz", "CASE_CCCC"),
    "label_without_image": (lambda f: _label(f) or (f / "imagesTr" / "case_001_0000.nii.gz").unlink(), {},
                            "case_001.nii.gz", "label file has no image"),
    "patients_missing_case": (lambda f: _patients(f, {"s1": ["case_000", "case_777"]}), {},
                              "patientsTr.json", "case_777", "no images"),
    "patients_case_twice": (lambda f: _patients(f, {"s1": ["case_000", "case_001"], "s2": ["case_001"]}), {},
                            "patientsTr.json", "case_001", "two subjects"),
    "patients_dotdot": (lambda f: _patients(f, {"s1": ["../case_000"]}), {}, "patientsTr.json", "invalid case id"),
    "patients_not_list": (lambda f: _patients(f, {"s1": "case_000"}), {}, "patientsTr.json", "non-empty list"),
    "visits_days_missing": (lambda f: _csv(f, "case,days\ncase_000,0\ncase_001,\ncase_002,1\ncase_003,2\n"), {},
                            "visitsTr.csv", "line 3", "case_001", "not a number"),
    "visits_days_text": (lambda f: _csv(f, "case,days\ncase_000,0\ncase_001,soon\ncase_002,1\ncase_003,2\n"), {},
                         "visitsTr.csv", "case_001", "not a number", "soon"),
    "visits_no_days_column": (lambda f: _csv(f, "case,score\ncase_000,1\n"), {}, "visitsTr.csv", "'days'"),
    "visits_row_missing": (lambda f: _csv(f, "case,days\ncase_000,0\ncase_001,3\n"), {},
                           "visitsTr.csv", "no row", "case_002"),
    "visits_unknown_case": (lambda f: _csv(f, "case,days\ncase_000,0\nghost,3\n"), {}, "visitsTr.csv", "ghost"),
    # -- ambiguous dataset definitions ------------------------------------------------------------------------------
    "duplicate_label_value": (lambda f: _json(f, lambda d: d.update(labels={"background": 0, "lesion": 1, "edema": 1})),
                              {}, "dataset.json", "'lesion' and 'edema'", "both have value 1"),
    "duplicate_label_region": (lambda f: _json(f, lambda d: d.update(labels={"background": 0, "a": [1, 2], "b": [2, 1]},
                                                                     regions_class_order=[1, 2])),
                               {}, "dataset.json", "'a' and 'b'", "region [1, 2]"),
    "duplicate_label_name": (lambda f: _duplicate_key_json(
        f, "dataset.json", '{"channel_names": {"0": "ch0"}, "labels": {"background": 0, "lesion": 1, "lesion": 2},'
                           ' "numTraining": 4, "file_ending": ".nii.gz"}'), {},
        "dataset.json", "duplicate key 'lesion'"),
    "label_wrong_ending": (lambda f: _rename(f / "labelsTr" / "case_001.nii.gz", "case_001.nii"), {},
                           "case_001.nii", "file ending differs", "'.nii.gz'", "unlabelled"),
    "label_wrong_ending_upper": (lambda f: _rename(f / "labelsTr" / "case_002.nii.gz", "case_002.NII.GZ"), {},
                                 "case_002.NII.GZ", "file ending differs"),
    "image_wrong_ending": (lambda f: _image(f, _noise(), "case_001_0000.mha")
                           or (f / "imagesTr" / "case_001_0000.nii.gz").unlink(), {},
                           "case_001_0000.mha", "file ending differs", "ignored"),
    "case_in_imagesTs_too": (lambda f: _copy_case(f, "case_001", "case_001", side="Ts"), {},
                             "case_001_0000.nii.gz", "imagesTr/ and imagesTs/"),
    "patients_case_twice_in_one_subject": (lambda f: _patients(f, {"s1": ["case_000", "case_001", "case_000"]}), {},
                                           "patientsTr.json", "case_000", "listed twice under subject 's1'"),
    "patients_duplicate_subject": (lambda f: _duplicate_key_json(
        f, "patientsTr.json", '{"s1": ["case_000", "case_001"], "s1": ["case_002"]}'), {},
        "patientsTr.json", "duplicate key 's1'"),
    "case_id_seg_collision": (lambda f: _copy_case(f, "case_001", "case_001_seg"), {},
                              "case_001_seg_0000.nii.gz", "'case_001' and 'case_001_seg'", "case_001_seg.b2nd"),
    "case_id_marker_plan_fingerprint": (lambda f: _copy_case(f, "case_001", "plan_fingerprint"), {},
                                        "plan_fingerprint_0000.nii.gz", "reserved", "plan_fingerprint.json"),
    "case_id_marker_dataset": (lambda f: _copy_case(f, "case_001", "dataset", with_label=False), {},
                               "dataset_0000.nii.gz", "reserved", "dataset.json"),
    "case_ids_differ_in_case_only": (lambda f: _copy_case(f, "case_001", "CASE_001"), {},
                                     "case_001_0000.nii.gz", "collide", "case-insensitive"),
    "visits_duplicate_column": (lambda f: _csv(f, "case,days,days\ncase_000,0,1\ncase_001,0,1\ncase_002,0,1\n"
                                                  "case_003,0,1\n"), {}, "visitsTr.csv", "'days' appears twice"),
    "visits_non_increasing": (
        lambda f: _patients(f, {"s1": ["case_000", "case_001"]})
        or _csv(f, "case,days\ncase_000,30\ncase_001,30\ncase_002,0\ncase_003,0\n"), {},
        "visitsTr.csv", "s1", "must increase", "case_001"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_input_is_reported(tmp_path, name):
    mutate, kwargs, file_name, *keywords = CORPUS[name]
    folder = make_raw_dataset(tmp_path, n_cases=4, **kwargs)
    mutate(folder)
    problems = problems_of(folder)
    assert problems, f"{name}: no problem reported"
    assert_reported(problems, file_name, *keywords)


def test_clean_dataset_has_no_problems(tmp_path):
    folder = make_raw_dataset(tmp_path, n_cases=4, n_channels=2, subjects={"s1": ["a", "b"], "s2": ["c"]},
                              visits={"a": 0, "b": 12.5, "c": 0})
    assert problems_of(folder) == []


# -- the three files planted in the Udacity copy of MSD Task04 (real data) -----------------------------------------
def _hippocampus_subset(shared_data: Path, tmp_path: Path, ids=("001", "003", "004")) -> Path:
    """A 3-case nnU-Net raw dataset built from the real Task04 files (copied, renamed to _0000)."""
    src = shared_data / "Task04_Hippocampus"
    folder = tmp_path / "Dataset004_Hippocampus"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for i in ids:
        shutil.copyfile(src / "imagesTr" / f"hippocampus_{i}.nii.gz", folder / "imagesTr" / f"hippocampus_{i}_0000.nii.gz")
        shutil.copyfile(src / "labelsTr" / f"hippocampus_{i}.nii.gz", folder / "labelsTr" / f"hippocampus_{i}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(ids), "file_ending": ".nii.gz"}))
    return folder


def test_misfit_image_without_label_is_unlabelled_visit(shared_data, tmp_path):
    folder = _hippocampus_subset(shared_data, tmp_path)
    shutil.copyfile(shared_data / "hippocampus_udacity_misfits" / "image_without_label_hippocampus_118.nii.gz",
                    folder / "imagesTr" / "hippocampus_118_0000.nii.gz")
    assert RawDataset(folder).unlabelled_cases == ["hippocampus_118"]
    problems = problems_of(folder)
    assert len(problems) == 1, problems
    assert_reported(problems, "dataset.json", "numTraining is 3", "4 cases", "1 unlabelled: hippocampus_118")


def test_misfit_label_without_image(shared_data, tmp_path):
    folder = _hippocampus_subset(shared_data, tmp_path)
    shutil.copyfile(shared_data / "hippocampus_udacity_misfits" / "label_hippocampus_010_duplicate_of_011.nii.gz",
                    folder / "labelsTr" / "hippocampus_010.nii.gz")
    with pytest.raises(DatasetError, match="label file has no image") as exc:
        RawDataset(folder)
    assert exc.value.path.endswith("labelsTr/hippocampus_010.nii.gz")
    assert "hippocampus_010_0000.nii.gz" in exc.value.message


def test_misfit_wrong_anatomy_label(shared_data, tmp_path):
    folder = _hippocampus_subset(shared_data, tmp_path)
    shutil.copyfile(shared_data / "hippocampus_udacity_misfits" / "label_hippocampus_281_wrong_anatomy_512x512x94.nii.gz",
                    folder / "labelsTr" / "hippocampus_003.nii.gz")
    problems = problems_of(folder)
    assert len(problems) == 1, problems
    assert_reported(problems, "hippocampus_003.nii.gz", "label geometry", "size (512, 512, 94)", "spacing [0.7344")
