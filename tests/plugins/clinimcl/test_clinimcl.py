"""ClinImCL (plugins/longnet_clinimcl): InfoNCE properties, honest subject batches, train → predict → evaluate."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longnet_clinimcl.losses import info_nce
from longnet_clinimcl.network import ClinImCLNet


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


@pytest.mark.parametrize("symmetric", [True, False])
def test_infonce_is_log_b_for_identical_embeddings(symmetric):
    z = F.normalize(torch.randn(1, 16), dim=1).repeat(8, 1)
    assert info_nce(z, z, 0.07, symmetric).item() == pytest.approx(math.log(8), abs=1e-6)


def test_infonce_symmetric_in_views_and_zero_for_aligned_orthogonal_items():
    a, b = torch.randn(6, 10), torch.randn(6, 10)
    torch.testing.assert_close(info_nce(a, b), info_nce(b, a))
    assert not torch.isclose(info_nce(a, b, symmetric=False), info_nce(b, a, symmetric=False))
    eye = torch.eye(8, 16)
    assert info_nce(eye, eye, 0.07).item() < 1e-4  # log(1 + 7·e^{-1/0.07}) ≈ 4e-6


def test_infonce_random_unit_vectors_near_log_b_plus_variance_term():
    g = torch.Generator().manual_seed(0)
    vals = [info_nce(torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g), 0.07).item()
            for _ in range(5)]
    expected = math.log(64) + 1 / (2 * 0.07 ** 2 * 128)  # ≈ 4.95 (4.91 measured at initialisation)
    assert np.mean(vals) == pytest.approx(expected, abs=0.25)


def test_network_shapes_and_normalised_projection():
    net = ClinImCLNet(2, (4, 8, 16, 32), h_dim=32, z_dim=16).eval()
    with torch.no_grad():
        h, z = net(torch.randn(3, 2, 32, 32, 32))
    assert h.shape == (3, 32) and z.shape == (3, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    assert 380_000 < sum(p.numel() for p in ClinImCLNet(1).parameters()) < 450_000  # ~0.4 M at paper sizes


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from tiny_score_dataset import make_tiny_score_dataset
    from tiny_seg_dataset import set_env

    set_env(monkeypatch, tmp_path)
    make_tiny_score_dataset(tmp_path)
    return tmp_path


def test_batches_hold_distinct_subjects_and_two_distinct_visits_each(tiny):
    from longnet.data.longitudinal import LongitudinalIndex
    from longnet_clinimcl.trainer import VisitPairBatches
    from tiny_score_dataset import DATASET

    index = LongitudinalIndex(tiny / "preprocessed" / DATASET, "nnUNetPlans_3d_fullres")
    batches = VisitPairBatches(index, inputs=None, batch_size=4)
    for i in range(300):
        subjects, pairs = batches.draw(np.random.default_rng([1, i]))
        assert len(set(subjects)) == len(subjects) == 4
        for s, (a, b) in zip(subjects, pairs):
            assert a != b and index.subject_of(a) == index.subject_of(b) == s


def test_clinimcl_train_predict_evaluate(tiny):
    from longnet.cli.evaluate import main as evaluate_main
    from longnet.cli.predict import main as predict_main
    from longnet.cli.train import main as train_main
    from tiny_score_dataset import DATASET

    assert train_main([DATASET, "3d_fullres", "0", "-tr", "ClinImCLTrainer", "--preset", "tiny", "--cube", "16",
                       "--epochs", "2", "--iters-per-epoch", "2", "--val-iters", "1", "-device", "cpu"]) == 0
    fold = tiny / "results" / DATASET / "ClinImCLTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert len(ckpt["logging"]["val_loss"]) == 2  # 2 validation subjects: one frozen batch of B = 2
    raw = tiny / "raw" / DATASET
    out = tiny / "pred"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", DATASET, "-c", "3d_fullres", "-tr",
                         "ClinImCLTrainer", "-f", "0", "-device", "cpu", "--patients", str(raw / "patientsTs.json"),
                         "--embedding", "h"]) == 0
    with np.load(out / "embeddings.npz") as z:
        assert z["embeddings"].shape == (6, 32)  # h of the tiny preset
    assert (out / "trajectories.png").stat().st_size > 1000
    assert evaluate_main([str(raw), str(out), "--task", "embedding"]) == 0  # patientsTs.json found in GT
    s = json.loads((out / "summary.json").read_text())
    assert 0 <= s["MCCD"] <= 2 and s["num_subjects"] == 2 and s["num_subject_pairs"] == 1
