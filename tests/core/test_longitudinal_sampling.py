"""Property tests of the longitudinal data layer (`longnet.data.longitudinal`): index, samplers, sparse
filling, frozen validation draws and the shared-geometry crop/augmentation."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longnet.data.augmentation import spatial_aug_config
from longnet.data.longitudinal import LongitudinalIndex
from longnet.data.longitudinal_sampling import (InterSubjectPairSampler, IntraSubjectPairSampler, PairDraw,
    SequenceSampler, SubjectBatchSampler, fill_sparse, frozen_draws, frozen_draws_path)
from longnet.data.longitudinal_geometry import paired_spatial_augment, random_crop_aligned
from longnet.errors import DatasetError, LongnetError
from longnet.io.storage import save_case

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
IDENT = "nnUNetPlans_3d_fullres"
SHAPE = (6, 8, 7)
# subject -> visit days; stored out of time order on purpose (the index must sort by days)
DAYS = {"A": [250.0, 0.0, 700.0, 100.0], "B": [0.0, 30.0, 60.0], "C": [0.0], "D": [400.0, 0.0],
        "E": [0.0, 50.0, 100.0, 150.0, 200.0, 260.0]}
N_DRAWS = 300


def make_longitudinal(root: Path) -> Path:
    """A tiny preprocessed dataset: 5 subjects with 1–6 visits, visit metadata with a score and a target."""
    pre = root / "Dataset991_TinyLong"
    visits, subjects = {}, {}
    for s, days in DAYS.items():
        for k, d in enumerate(days):
            case = f"{s}_v{k}"
            value = float(ord(s) * 1000 + d)  # encodes subject and days, checked after loading
            data = np.full((1, *SHAPE), value, np.float32)
            seg = np.zeros((1, *SHAPE), np.int8)
            save_case(pre / IDENT, case, data, seg, {"spacing": [1.0, 1.0, 1.0], "class_locations": {},
                                                    "labelled": k % 2 == 0, "subject": s, "days": d})
            visits[case] = {"days": d, "subject": s, "visit_index": k, "labelled": k % 2 == 0,
                            "meta": {"score": 30.0 - d / 100, "converter": float(s in "AE")}}
            subjects.setdefault(s, []).append(case)
    (pre / "visits.json").write_text(json.dumps(visits))
    (pre / "subjects.json").write_text(json.dumps(subjects))
    return pre


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> LongitudinalIndex:
    return LongitudinalIndex(make_longitudinal(tmp_path_factory.mktemp("long")), IDENT)


def rngs(n: int = N_DRAWS, base: int = 0):
    return (np.random.default_rng([base, i]) for i in range(n))


def test_index_sorts_by_days_and_exposes_metadata(index):
    subjects = index.subjects
    assert list(subjects) == sorted(DAYS)
    assert subjects["A"] == ["A_v1", "A_v3", "A_v0", "A_v2"]
    for s, cases in subjects.items():
        days = [index.days(c) for c in cases]
        assert days == sorted(days) and all(index.subject_of(c) == s for c in cases)
    assert index.meta("A_v3") == {"score": 29.0, "converter": 1.0} and index.labelled("A_v0")
    assert not index.labelled("A_v1") and index.columns() == {"score", "converter"}
    data, seg, props = index.load("E_v2")
    assert data.shape == (1, *SHAPE) and data[0, 0, 0, 0] == ord("E") * 1000 + 100 and props["subject"] == "E"
    assert index.load("E_v2")[0] is data and not data.flags.writeable  # cached, protected from in-place edits
    part = LongitudinalIndex(index.folder, IDENT, cases=["B_v2", "B_v0", "D_v0"])
    assert part.subjects == {"B": ["B_v0", "B_v2"], "D": ["D_v0"]}
    with pytest.raises(DatasetError, match="not preprocessed"):
        LongitudinalIndex(index.folder, IDENT, cases=["B_v0", "Z_v9"])


@pytest.mark.parametrize("mode", ["adjacent", "random"])
def test_intra_pairs_same_subject_time_ordered(index, mode):
    sampler = IntraSubjectPairSampler(index, mode)
    assert "C" not in sampler.subjects  # a single visit cannot form a pair
    seen = set()
    for rng in rngs():
        d = sampler.draw(rng)
        cases = index.subjects[d.subject]
        ia, ib = cases.index(d.case_a), cases.index(d.case_b)  # raises if a visit is from another subject
        assert index.subject_of(d.case_a) == index.subject_of(d.case_b) == d.subject == d.subject_b
        assert ia < ib and d.dt_days >= 0 and d.dt_days == index.days(d.case_b) - index.days(d.case_a)
        assert (d.days_a, d.days_b, d.meta_b) == (index.days(d.case_a), index.days(d.case_b), index.meta(d.case_b))
        if mode == "adjacent":
            assert ib == ia + 1
        seen.add((d.case_a, d.case_b))
    if mode == "adjacent":  # every consecutive pair is reachable
        assert seen == {(cs[i], cs[i + 1]) for cs in index.subjects.values() for i in range(len(cs) - 1)}
    else:
        assert any(index.subjects[index.subject_of(a)].index(b) - index.subjects[index.subject_of(a)].index(a) > 1
                   for a, b in seen)


def test_window_pairs_inside_the_window_and_impossible_window_fails_fast(index):
    sampler = IntraSubjectPairSampler(index, "window", min_days=40, max_days=120)
    dts = [sampler.draw(rng).dt_days for rng in rngs()]
    assert all(40 <= dt <= 120 for dt in dts) and len(set(dts)) > 1
    adjacent = IntraSubjectPairSampler(index, "adjacent", max_days=50)
    assert all(0 <= adjacent.draw(rng).dt_days <= 50 for rng in rngs(50))
    with pytest.raises(LongnetError, match=r"IntraSubjectPairSampler\(mode='window', min_days=5000.0, "
                                           r"max_days=6000.0\): no subject has a visit pair inside the window"):
        IntraSubjectPairSampler(index, "window", min_days=5000, max_days=6000)
    with pytest.raises(ValueError):
        IntraSubjectPairSampler(index, "window")


def test_inter_pairs_never_share_a_subject(index):
    sampler = InterSubjectPairSampler(index)
    pairs = [sampler.draw(rng) for rng in rngs()]
    assert all(p.subject != p.subject_b and index.subject_of(p.case_a) == p.subject
               and index.subject_of(p.case_b) == p.subject_b and math.isnan(p.dt_days) for p in pairs)
    assert {p.subject for p in pairs} == set(DAYS)
    one = LongitudinalIndex(index.folder, IDENT, cases=["A_v0", "A_v1"])
    with pytest.raises(LongnetError, match="InterSubjectPairSampler.*fewer than two subjects"):
        InterSubjectPairSampler(one)


@pytest.mark.parametrize("n_context,gap,mask_prob", [(3, 0, 0.5), (4, 1, 0.0), (5, 2, 1.0)])
def test_sequence_order_masking_and_left_padding(index, n_context, gap, mask_prob):
    sampler = SequenceSampler(index, n_context, mask_prob=mask_prob, gap=gap)
    padded = masked = 0
    for rng in rngs():
        d = sampler.draw(rng)
        cases = index.subjects[d.subject]
        k = cases.index(d.target)
        assert len(d.context) == len(d.context_days) == len(d.context_meta) == n_context
        assert d.target_days == index.days(d.target) and d.target_meta == index.meta(d.target)
        assert sum(d.valid) >= 1 and all(c is None for c in d.context[n_context - gap:])  # gap slots hidden
        for i, c in enumerate(d.context):
            visit = k - n_context + i  # slot i holds visit k − n_context + i, or is missing
            if visit < 0:
                assert c is None
            elif c is not None:
                assert c == cases[visit] and d.context_days[i] == index.days(c) <= d.target_days
            else:
                assert d.context_days[i] is None
        padded += k < n_context
        allowed = [i for i in range(n_context) if 0 <= k - n_context + i < k - gap]
        masked += sum(d.valid) < len(allowed)
        if mask_prob == 0.0:
            assert [i for i, v in enumerate(d.valid) if v] == allowed
        if mask_prob == 1.0:
            assert sum(d.valid) == 1
    assert padded > 0
    assert (masked > 0) == (mask_prob > 0)
    with pytest.raises(ValueError):
        SequenceSampler(index, 2, gap=2)


def test_fill_sparse_rule():
    a, b = np.full((2, 2), 1.0), np.full((2, 2), 2.0)
    assert [x is a for x in fill_sparse([None, a, None, b, None])] == [True, True, True, False, False]
    assert [x is b for x in fill_sparse([None, a, None, b, None])] == [False, False, False, True, True]
    assert all(x is a for x in fill_sparse([None, None, a]))
    z = np.zeros((2, 2))
    assert [float(x[0, 0]) for x in fill_sparse([z, a, z, b, z], zero_is_missing=True)] == [1, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        fill_sparse([None, None])


def test_subject_batches_have_no_subject_twice(index):
    sampler = SubjectBatchSampler(index, batch_size=3, min_visits=2)
    for rng in rngs():
        batch = sampler.draw(rng)
        assert len(batch) == len(set(batch)) == 3 and "C" not in batch
    with pytest.raises(LongnetError, match="SubjectBatchSampler"):
        SubjectBatchSampler(index, batch_size=5, min_visits=2)


def test_draws_reproducible_for_a_seed(index):
    for sampler in (IntraSubjectPairSampler(index, "random"), InterSubjectPairSampler(index),
                    SequenceSampler(index, 3), SubjectBatchSampler(index, 2)):
        first = [repr(sampler.draw(rng)) for rng in rngs(20, base=7)]
        assert first == [repr(sampler.draw(rng)) for rng in rngs(20, base=7)]
        assert first != [repr(sampler.draw(rng)) for rng in rngs(20, base=8)]


def test_frozen_draws_identical_across_epochs_and_processes(index, tmp_path):
    path = frozen_draws_path(tmp_path, "val_sequences", 0)
    sampler = SequenceSampler(index, 3, mask_prob=0.5)
    epoch1 = frozen_draws(sampler, 12, seed=123, path=path)
    stamp = path.stat().st_mtime_ns
    epoch2 = frozen_draws(SequenceSampler(index, 3, mask_prob=0.5), 12, seed=123, path=path)
    assert epoch1 == epoch2 and path.stat().st_mtime_ns == stamp  # reloaded, not redrawn
    assert json.loads(path.read_text())["draws"][0]["kind"] == "sequence"
    # a fresh process drawing into its own file gets the same draws (no hash-order or global-RNG dependence)
    other = tmp_path / "other.json"
    code = ("import sys; from longnet.data.longitudinal import LongitudinalIndex; "
            "from longnet.data.longitudinal_sampling import SequenceSampler, frozen_draws; "
            f"idx = LongitudinalIndex(sys.argv[1], {IDENT!r}); "
            "frozen_draws(SequenceSampler(idx, 3, mask_prob=0.5), 12, seed=123, path=sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(index.folder), str(other)], check=True, cwd=REPO,
                   env={"PYTHONHASHSEED": "987", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, timeout=120)
    assert json.loads(other.read_text())["draws"] == json.loads(path.read_text())["draws"]
    with pytest.raises(LongnetError, match="different setup"):
        frozen_draws(SequenceSampler(index, 4), 12, seed=123, path=path)
    inter = frozen_draws(InterSubjectPairSampler(index), 5, seed=1, path=tmp_path / "inter.json")
    again = frozen_draws(InterSubjectPairSampler(index), 5, seed=1, path=tmp_path / "inter.json")
    assert all(isinstance(d, PairDraw) and math.isnan(d.dt_days) for d in again)
    assert [(d.case_a, d.case_b) for d in inter] == [(d.case_a, d.case_b) for d in again]
    assert "NaN" not in (tmp_path / "inter.json").read_text()  # strict JSON


def test_random_crop_aligned_takes_one_window(index):
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    coords = np.stack([zz, yy, xx]).astype(np.float32)
    for rng in rngs(20):
        a, b, s = random_crop_aligned([coords, coords + 100, coords[:1].astype(np.int16) + 1], (4, 5, 9), rng,
                                      pad_values=[0, 100, -1])
        inside = s[0] != -1
        assert np.array_equal(b - 100, a) and np.array_equal(s[0][inside] - 1, a[0][inside])
        assert a.shape == (3, 4, 5, 9) and (s == -1).any()  # x is padded: 9 > 7
    with pytest.raises(LongnetError, match="not on one grid"):
        random_crop_aligned([coords, coords[:, :-1]], (4, 4, 4), np.random.default_rng(0))


def _coords(shape):
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return np.stack(grids)


def test_paired_augment_gives_members_identical_geometry():
    rng0 = np.random.default_rng(0)
    vol = rng0.normal(size=(1, 20, 22, 24)).astype(np.float32)
    seg = (vol > 0.5).astype(np.int16)
    aug = spatial_aug_config([12, 12, 12])
    kw = dict(patch_size=[12, 12, 12], aug=aug, p_rotation=1.0, p_scaling=1.0)
    np_state = np.random.get_state()[1].copy()
    for i in range(3):
        (a, b), (sa, sb) = paired_spatial_augment([vol, vol.copy()], np.random.default_rng(i), segs=[seg, seg], **kw)
        assert a.shape == (1, 12, 12, 12) and torch.equal(a, b) and torch.equal(sa, sb)
        assert not torch.allclose(a, torch.from_numpy(vol[:, 4:16, 5:17, 6:18]))  # a real rotation happened
    assert np.array_equal(np.random.get_state()[1], np_state)  # global RNG untouched
    # Sampled positions: members that are coordinate maps (one offset by a constant) stay offset by exactly that
    # constant after any rotation/scaling/flip, i.e. every output voxel of both samples the same input point.
    coords = _coords((20, 22, 24))
    shift = np.array([3.0, -2.0, 5.0], np.float32)[:, None, None, None]
    ones = np.ones((1, 20, 22, 24), np.float32)
    (ca, cb, co), _ = paired_spatial_augment([coords, coords + shift, ones], np.random.default_rng(5), **kw)
    inside = co[0] > 1 - 1e-5  # voxels whose interpolation did not reach into the zero padding
    assert inside.sum() > 100
    assert torch.allclose((cb - ca)[:, inside], torch.from_numpy(shift[:, 0, 0]).expand(3, int(inside.sum())),
                          atol=1e-3)
    # Spatial shift: with only the crop left, an image and its shifted copy differ by the same shift
    img = rng0.normal(size=(1, 20, 22, 24)).astype(np.float32)
    moved = np.roll(img, (2, 1, -3), axis=(1, 2, 3))
    (ia, ib), _ = paired_spatial_augment([img, moved], np.random.default_rng(1), patch_size=[12, 12, 12], aug=aug,
                                         mirror=False, p_rotation=0.0, p_scaling=0.0)
    assert torch.equal(ib[:, 2:, 1:, :-3], ia[:, :-2, :-1, 3:])


def test_paired_augment_reproducible_and_dummy_2d():
    vol = np.random.default_rng(3).normal(size=(2, 4, 40, 40)).astype(np.float32)
    aug = spatial_aug_config([4, 24, 24])
    assert aug.dummy_2d
    out1, _ = paired_spatial_augment([vol, vol[:1]], np.random.default_rng(9), patch_size=[4, 24, 24], aug=aug,
                                     p_rotation=1.0)
    out2, _ = paired_spatial_augment([vol, vol[:1]], np.random.default_rng(9), patch_size=[4, 24, 24], aug=aug,
                                     p_rotation=1.0)
    assert [o.shape for o in out1] == [(2, 4, 24, 24), (1, 4, 24, 24)]
    assert all(torch.equal(x, y) for x, y in zip(out1, out2)) and torch.equal(out1[0][:1], out1[1])
