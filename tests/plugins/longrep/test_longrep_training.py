"""LongRep end to end on a tiny aligned longitudinal dataset: pretrain (2 epochs × 2 iterations), finetune from
its checkpoint via `longnet.cli.train.main`, the label budget, resume-exact alternation, and a smoke run on the
real TCIA longitudinal set (skipped without ../shared/data)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from longnet.cli.train import main as train_main
from longnet.data.dataset_index import DatasetIndex, select_labelled_subjects
from longnet.io.storage import save_case
from tiny_seg_dataset import fold_dir, set_env, tiny_plans

DATASET = "Dataset991_TinyLong"
SHAPE = (16, 20, 16)
TINY_PT = ["--proj-width", "32", "--num-patches", "16", "--val-iters", "1", "-device", "cpu"]
TINY_FT = ["--val-iters", "1", "--no-validation-mirroring", "--disable-final-validation", "-device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


def make_tiny_longitudinal(root: Path, n_subjects: int = 4, n_visits: int = 3) -> Path:
    """Aligned visits of a growing two-label blob; the last visit of every subject is unlabelled."""
    pre = Path(root) / "preprocessed" / DATASET
    folder = pre / "nnUNetPlans_3d_fullres"
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    visits, subjects = {}, {}
    for s in range(n_subjects):
        centre = rng.integers([6, 7, 6], [10, 13, 10])
        subj = f"s{s}"
        subjects[subj] = []
        for v in range(n_visits):
            case = f"{subj}_v{v}"
            r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
            seg = np.zeros(SHAPE, dtype=np.int8)
            seg[r < 3 + 0.5 * v] = 1
            seg[(r < 3 + 0.5 * v) & (y > centre[1])] = 2
            data = (rng.normal(0, 0.3, SHAPE) + seg).astype(np.float32)[None]
            labelled = v < n_visits - 1
            stored = seg if labelled else np.zeros_like(seg)
            locs = {str(k): [[0, *map(int, p)] for p in np.argwhere(stored == k)[::5]] for k in (1, 2)}
            props = {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": list(SHAPE),
                     "bbox_used_for_cropping": [[0, n] for n in SHAPE],
                     "shape_after_cropping_and_before_resampling": list(SHAPE), "class_locations": locs,
                     "labelled": labelled, "subject": subj, "days": 100.0 * v}
            save_case(folder, case, data, stored[None], props)
            visits[case] = {"days": 100.0 * v, "subject": subj, "visit_index": v, "labelled": labelled, "meta": {}}
            subjects[subj].append(case)
    (pre / "nnUNetPlans.json").write_text(json.dumps(tiny_plans(DATASET)))
    (pre / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"},
                                                  "labels": {"background": 0, "a": 1, "b": 2},
                                                  "numTraining": len(visits), "file_ending": ".nii.gz"}))
    (pre / "visits.json").write_text(json.dumps(visits))
    (pre / "subjects.json").write_text(json.dumps(subjects))
    names = sorted(subjects)
    splits = []
    for k in range(2):
        val = [c for s in names[k::2][:1] for c in subjects[s]]
        splits.append({"train": [c for s in names for c in subjects[s] if c not in val], "val": val})
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return pre


@pytest.fixture
def tiny_long(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    make_tiny_longitudinal(tmp_path)
    return tmp_path


def test_pretrain_then_finetune_from_its_checkpoint(tiny_long):
    rc = train_main([DATASET, "3d_fullres", "0", "-tr", "LongRepPretrainer", "--epochs", "2",
                     "--iters-per-epoch", "2"] + TINY_PT)
    assert rc == 0
    pt = fold_dir(tiny_long, "LongRepPretrainer", dataset_name=DATASET) / "checkpoint_final.pth"
    ckpt = torch.load(pt, weights_only=True)
    log = ckpt["logging"]
    for key in ("train_loss", "train_sim", "train_rec", "train_var", "train_cov", "train_orth", "val_loss"):
        assert len(log[key]) == 2 and all(np.isfinite(log[key])), key
    assert all(-1.0 <= v <= 1.0 for v in log["train_sim"]) and all(0.0 <= v <= 1.0 for v in log["train_orth"])
    weights = ckpt["network_weights"]
    # the final checkpoint feeds the finetuner: U-Net only, no SimSiam heads and no optimiser state (those are
    # ~95% of a full checkpoint and only checkpoint_latest.pth, for --c, keeps them)
    assert not any(k.startswith("longrep_") for k in weights) and ckpt["optimizer_state"] is None
    assert ckpt["resumable"] is False
    assert "encoder.stages.0.0.convs.0.conv.weight" in weights
    best = torch.load(pt.with_name("checkpoint_best.pth"), weights_only=True)
    assert not any(k.startswith("longrep_") for k in best["network_weights"])
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "LongRepPretrainer", "--c"] + TINY_PT) == 0  # done: no-op
    assert (tiny_long / "preprocessed" / DATASET / "frozen_draws").is_dir()  # fixed validation pairs

    rc = train_main([DATASET, "3d_fullres", "0", "-tr", "LongRepFinetuner", "--epochs", "2", "--iters-per-epoch",
                     "2", "--pretrained-weights", str(pt), "--labelled-subjects", "1"] + TINY_FT)
    assert rc == 0
    fd = fold_dir(tiny_long, "LongRepFinetuner", dataset_name=DATASET)
    text = next(fd.glob("training_log_*.txt")).read_text()
    assert "pretrained weights" in text and "checkpoint tensors unused" not in text
    assert "label budget: 1 subject(s)" in text
    ft = torch.load(fd / "checkpoint_final.pth", weights_only=True)
    assert not any(k.startswith("longrep_") for k in ft["network_weights"])
    assert len(ft["logging"]["train_loss_sup"]) == 2 and len(ft["logging"]["train_loss_cs"]) == 2
    # the finetuned encoder started from the pretrained one (loaded, then trained a few steps with a small lr)
    w_pt = weights["encoder.stages.0.0.convs.0.conv.weight"]
    w_ft = ft["network_weights"]["encoder.stages.0.0.convs.0.conv.weight"]
    assert torch.allclose(w_pt, w_ft, atol=1e-2)

    # default --transfer no-output: the full-resolution output stage kept its fresh initialisation, the rest loaded
    fresh = re.findall(r"skipped (\S+) \(kept freshly initialised", text)
    last = max(int(k.split(".")[2]) for k in weights if k.startswith("decoder.stages."))
    assert fresh and all(k.startswith((f"decoder.stages.{last}.", f"decoder.transpconvs.{last}.",
                                       "decoder.seg_layers.")) for k in fresh)
    assert any(k.startswith("decoder.seg_layers.") for k in fresh)
    assert not any(k.startswith("encoder.") for k in fresh)
    # --transfer all (the paper): every U-Net weight is loaded
    for f in fd.glob("training_log_*.txt"):
        f.unlink()
    rc = train_main([DATASET, "3d_fullres", "0", "-tr", "LongRepFinetuner", "--epochs", "1", "--iters-per-epoch",
                     "1", "--pretrained-weights", str(pt), "--labelled-subjects", "1", "--transfer", "all"] + TINY_FT)
    assert rc == 0
    text = "\n".join(f.read_text() for f in fd.glob("training_log_*.txt"))
    assert "pretrained weights" in text and "kept freshly initialised" not in text and "skipped 0" in text


def test_label_budget_is_deterministic_and_shared(tmp_path):
    pre = make_tiny_longitudinal(tmp_path, n_subjects=5)
    index = DatasetIndex.load(pre, "nnUNetPlans_3d_fullres")
    cases = index.cases
    one = select_labelled_subjects(index, cases, 1, seed=0)
    assert one == select_labelled_subjects(index, cases, 1, seed=0)
    assert len({index.subject_of(c) for c in one}) == 1 and all(index.labelled(c) for c in one) and len(one) == 2
    picks = {tuple(select_labelled_subjects(index, cases, 1, seed=s)) for s in range(10)}
    assert len(picks) > 1  # the seed matters
    assert len({index.subject_of(c) for c in select_labelled_subjects(index, cases, 3, seed=0)}) == 3
    from longnet.errors import DatasetError
    with pytest.raises(DatasetError):
        select_labelled_subjects(index, cases, 6, seed=0)


def test_alternating_batches_resume_at_the_right_stream_positions():
    from longnet_longrep.finetuner import _alternate

    gen = _alternate(iter(range(100)), iter(range(1000, 1100)), True)
    seq = [next(gen) for _ in range(6)]
    assert seq == [0, {"pair": 1000}, 1, {"pair": 1001}, 2, {"pair": 1002}]
    # resuming after 3 steps: labelled stream at (3+1)//2 = 2, pair stream at 3//2 = 1, next step is a pair
    gen = _alternate(iter(range(2, 100)), iter(range(1001, 1100)), first_is_labelled=False)
    assert [next(gen) for _ in range(3)] == [{"pair": 1001}, 2, {"pair": 1002}]


def test_baseline_accepts_the_same_label_budget(tiny_long):
    rc = train_main([DATASET, "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1",
                     "--labelled-subjects", "1"] + TINY_FT)
    assert rc == 0
    text = next(fold_dir(tiny_long, dataset_name=DATASET).glob("training_log_*.txt")).read_text()
    assert "label budget: 1 subject(s)" in text


@pytest.mark.usefixtures("shared_data")
def test_tcia_longitudinal_smoke(tmp_path, monkeypatch):
    """Plan/preprocess the real TCIA pairs (T1, 4 subjects × 2 visits, rigidly aligned), then
    pretrain and finetune one step each. The planned network is shrunk (same plan otherwise) so a CPU step
    takes seconds; the full plan is exercised by the GPU check."""
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
    from raw_datasets import tcia_raw_dataset

    set_env(monkeypatch, tmp_path)
    tcia_raw_dataset(tmp_path / "raw", "Dataset005_TCIAProgT1")
    assert main_plan_and_preprocess(["-d", "5", "-c", "3d_fullres", "-np", "2", "--align", "rigid"]) == 0
    pre = tmp_path / "preprocessed" / "Dataset005_TCIAProgT1"
    _write_small_plans(pre / "nnUNetPlans.json", pre / "LongRepSmoke.json")
    small = ["-p", "LongRepSmoke", "--epochs", "1", "--iters-per-epoch", "1", "-device", "cpu"]
    assert train_main(["5", "3d_fullres", "0", "-tr", "LongRepPretrainer", "--proj-width", "64", "--num-patches",
                       "32", "--val-iters", "1"] + small) == 0
    pt = next((tmp_path / "results").rglob("LongRepPretrainer__*/fold_0/checkpoint_final.pth"))
    assert train_main(["5", "3d_fullres", "0", "-tr", "LongRepFinetuner", "--pretrained-weights", str(pt),
                       "--labelled-subjects", "1"] + small + TINY_FT[:-2]) == 0


def _write_small_plans(src: Path, dest: Path) -> None:
    """The dataset's plans with a 4-stage, 4..16-feature U-Net on 16×64×64 patches (same data identifier)."""
    plans = json.loads(src.read_text())
    plans["plans_name"] = dest.stem
    conf = plans["configurations"]["3d_fullres"]
    conf.update(patch_size=[16, 64, 64], batch_size=2)
    ak = conf["architecture"]["arch_kwargs"]
    ak.update(n_stages=4, features_per_stage=[4, 8, 16, 16], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
              strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2, 2],
              n_conv_per_stage_decoder=[2, 2, 2])
    plans["configurations"] = {"3d_fullres": conf}
    dest.write_text(json.dumps(plans))
