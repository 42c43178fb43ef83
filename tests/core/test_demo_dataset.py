"""The embedded synthetic demo dataset: deterministic, well-formed, longitudinal, loadable by RawDataset."""
from __future__ import annotations

import json

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from longnet.dataset.raw import RawDataset
from longnet.demo.synthetic import generate_demo_dataset


def _arr(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The default-size dataset, generated once for the module (about 3 s)."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0)


def test_deterministic_for_a_seed(tmp_path):
    a = generate_demo_dataset(tmp_path / "a", 2, 1, (16, 20, 16), seed=3)
    b = generate_demo_dataset(tmp_path / "b", 2, 1, (16, 20, 16), seed=3)
    c = generate_demo_dataset(tmp_path / "c", 2, 1, (16, 20, 16), seed=4)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    img = Path("imagesTr") / "sub000_v0_0000.nii.gz"
    assert np.array_equal(_arr(a / img), _arr(b / img))
    assert not np.array_equal(_arr(a / img), _arr(c / img))


def test_layout_and_loading(demo):
    assert demo.name == "Dataset990_LongDemo"
    tr = RawDataset(demo)
    ts = RawDataset(demo, side="Ts")
    assert tr.channel_names == ["T1", "FLAIR"]
    assert tr.dataset_json["numTraining"] == len(tr.cases)
    assert len(tr.subjects) == 12 and len(ts.subjects) == 4
    assert not set(tr.subjects) & set(ts.subjects), "a subject must not be on both sides"
    for raw in (tr, ts):
        for subj, cases in raw.subjects.items():
            assert 2 <= len(cases) <= 6
            days = [raw.cases[c].days for c in cases]
            assert days[0] == 0 and all(b > a for a, b in zip(days, days[1:]))
            assert all(60 <= b - a <= 400 for a, b in zip(days, days[1:]))
            assert {"score", "converter"} <= set(raw.cases[cases[0]].meta)
    # some training visits are unlabelled, but never a subject's first; every test visit is labelled
    assert tr.unlabelled_cases and tr.labelled_cases
    assert all(tr.cases[cases[0]].label is not None for cases in tr.subjects.values())
    assert not ts.unlabelled_cases
    data = _arr(tr.cases["sub000_v0"].images[0])
    assert data.shape == (32, 40, 32) and data.dtype == np.float32


def test_label_values_and_integrity(demo):
    from longnet.dataset.integrity import check_dataset

    check_dataset(demo, num_processes=1)
    seen = set()
    for p in sorted((demo / "labelsTr").glob("*.nii.gz"))[:10]:
        seen |= set(np.unique(_arr(p)).tolist())
    assert seen <= {0, 1, 2} and {1, 2} <= seen


def test_structures_grow_and_score_declines(demo):
    ts = RawDataset(demo, side="Ts")
    tr = RawDataset(demo)
    growth_v, growth_l, score_change = [], [], []
    for raw in (tr, ts):
        for cases in raw.subjects.values():
            labelled = [c for c in cases if raw.cases[c].label is not None]
            score_change.append(raw.cases[cases[-1]].meta["score"] - raw.cases[cases[0]].meta["score"])
            if len(labelled) < 2:
                continue
            first, last = (_arr(raw.cases[c].label) for c in (labelled[0], labelled[-1]))
            growth_v.append(int((last == 1).sum()) - int((first == 1).sum()))
            growth_l.append(int((last == 2).sum()) - int((first == 2).sum()))
    assert np.mean(growth_v) > 0 and np.mean(np.array(growth_v) > 0) > 0.7
    assert np.mean(growth_l) > 0
    assert np.mean(score_change) < 0
    with open(demo / "visitsTr.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "days", "score", "converter"]
    assert {r["converter"] for r in rows} == {"0", "1"}


def test_only_dataset_cli(tmp_path):
    from longnet.demo.main import main

    assert main(["--only-dataset", "--quick", "--out", str(tmp_path / "o"), "--seed", "1"]) == 0
    raw = RawDataset(tmp_path / "o" / "Dataset990_LongDemo")
    assert len(raw.subjects) >= 2
    # a second cohort: another seed, slower anatomy, recorded in dataset.json; a negative scale is one error
    assert main(["--only-dataset", "--quick", "--out", str(tmp_path / "slow"), "--seed", "2",
                 "--anatomy-time-scale", "0.5"]) == 0
    description = json.loads((tmp_path / "slow" / "Dataset990_LongDemo" / "dataset.json").read_text())["description"]
    assert "seed 2, anatomy time scale 0.5" in description
    assert main(["--only-dataset", "--out", str(tmp_path / "bad"), "--anatomy-time-scale", "-1"]) == 1
    assert not (tmp_path / "bad").exists()


def test_regenerating_smaller_removes_stale_files(tmp_path):
    generate_demo_dataset(tmp_path, 3, 1, (16, 20, 16), seed=0)
    folder = generate_demo_dataset(tmp_path, 2, 1, (16, 20, 16), seed=0)
    raw = RawDataset(folder)
    assert set(raw.subjects) == {"sub000", "sub001"}


def test_converter_is_partly_visible_in_a_single_scan(tmp_path):
    """The probing trainers predict `converter` from one scan: baseline ventricle size must carry signal
    (AUROC well above chance), while the label stays a statement about the future (not perfectly visible)."""
    raw = generate_demo_dataset(tmp_path, 0, 40, shape=(24, 32, 24), seed=3, dataset_id=994)
    rows = [r for r in csv.DictReader(open(raw / "visitsTs.csv")) if float(r["days"]) == 0]
    vent = [int((sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs" / f"{r['case']}.nii.gz"))) == 1).sum())
            for r in rows]
    conv = [int(r["converter"]) for r in rows]
    pos = [v for v, c in zip(vent, conv) if c]
    neg = [v for v, c in zip(vent, conv) if not c]
    assert pos and neg
    auroc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert 0.65 < auroc < 0.98, auroc


def test_anatomy_time_scale_slows_change_not_dates(tmp_path):
    """A slow anatomy clock keeps visit dates and first visits, and shrinks the change between visits."""
    normal = generate_demo_dataset(tmp_path / "n", 6, 0, (16, 20, 16), seed=5)
    slow = generate_demo_dataset(tmp_path / "s", 6, 0, (16, 20, 16), seed=5, anatomy_time_scale=0.1)
    assert (normal / "patientsTr.json").read_text() == (slow / "patientsTr.json").read_text()
    days = lambda f: [r["days"] for r in csv.DictReader(open(f / "visitsTr.csv"))]  # noqa: E731
    assert days(normal) == days(slow)
    first = Path("labelsTr") / "sub000_v0.nii.gz"
    assert np.array_equal(_arr(normal / first), _arr(slow / first))  # day 0 is day 0 on either clock

    def vent_change(folder: Path) -> float:
        raw = RawDataset(folder)
        out = []
        for cases in raw.subjects.values():
            vols = [int((_arr(raw.cases[c].label) == 1).sum()) for c in cases if raw.cases[c].label is not None]
            out += [abs(b - a) / max(a, 1) for a, b in zip(vols[:-1], vols[1:])]
        return float(np.mean(out))

    assert vent_change(slow) < 0.4 * vent_change(normal)
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "x", 1, 0, (16, 20, 16), anatomy_time_scale=-1)
