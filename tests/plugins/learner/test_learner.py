"""LEARNER (plugins/longnet_learner): TSM backbone, contrastive losses, d_t, and train → predict → evaluate."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longnet_learner.losses import contrastive_loss, learner_loss, pairwise_cosine_distance
from longnet_learner.network import ChangeNet, FrameInput
from longnet_learner.tsm import TSMResNet, temporal_shift


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


# ------------------------------------------------------------------------------------------ backbone
def test_temporal_shift_preserves_shape_and_interior_of_constant_clip():
    n, t, c = 2, 5, 16
    frame = torch.randn(n, 1, c, 3, 4)
    clip = frame.expand(n, t, c, 3, 4).reshape(n * t, c, 3, 4)
    out = temporal_shift(clip, t).view(n, t, c, 3, 4)
    assert out.shape == (n, t, c, 3, 4)
    assert torch.equal(out[:, 1:-1], clip.view(n, t, c, 3, 4)[:, 1:-1])  # interior frames unchanged
    assert torch.all(out[:, -1, :2] == 0) and torch.all(out[:, 0, 2:4] == 0)  # zero fill at the ends
    ramp = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1, 1).expand(1, t, c, 1, 1).reshape(t, c, 1, 1)
    shifted = temporal_shift(ramp, t).view(t, c)
    assert shifted[1, 0] == 2 and shifted[1, 2] == 0 and shifted[1, 5] == 1  # next / previous / own frame


def test_tsm_resnet_and_frame_input_shapes():
    net = TSMResNet(2, n_frames=4, widths=(8, 16, 32, 64), small_stem=True).eval()
    clip = FrameInput(4, 32)(np.random.default_rng(0).random((2, 20, 24, 22)).astype(np.float32))
    assert clip.shape == (4, 2, 32, 32)
    with torch.no_grad():
        assert net(torch.from_numpy(np.stack([clip, clip]))).shape == (2, 64)
    n_shifts = sum(type(m).__name__ == "TemporalShift" for m in net.modules())
    assert n_shifts == 8  # one before conv1 of each of the 8 residual blocks


def test_resnet3d_alternative_builds_from_options():
    from longnet_learner.network import EncoderConfig, EncoderOptions, build_encoder

    cfg = EncoderConfig.from_options(EncoderOptions(preset="tiny", backbone="resnet3d", frames=8, image_size=16))
    x = cfg.input_spec()(np.random.default_rng(0).random((2, 12, 20, 18)).astype(np.float32))
    assert x.shape == (2, 8, 16, 16)  # C×T×H×W volume for the 3D network
    with torch.no_grad():
        assert build_encoder(cfg, 2).eval()(torch.from_numpy(np.stack([x, x]))).shape == (2, 64)


def test_change_vector_is_antisymmetric():
    net = ChangeNet(TSMResNet(1, 4, (8, 8, 8, 8), small_stem=True), hidden=8)
    a, b = torch.randn(3, 4, 1, 16, 16), torch.randn(3, 4, 1, 16, 16)
    for mode in (net.eval, net.train):
        mode()
        with torch.no_grad():
            torch.testing.assert_close(net.difference(a, b), -net.difference(b, a))


# ------------------------------------------------------------------------------------------ losses
def test_plain_loss_zero_when_positives_coincide_and_negatives_beyond_margin():
    scores = torch.tensor([0.0, 0.5, 10.0, 10.0])  # range 10: bins {0, 1} and {2, 3}
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # negatives at distance 1 ≥ m = 0.5
    assert contrastive_loss(u, scores, 10.0, "plain", margin=0.5, tau=0.1) == 0
    near = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.2], [1.0, 0.2]])  # negatives too close
    assert contrastive_loss(near, scores, 10.0, "plain", margin=0.5, tau=0.1) > 0


def _embeddings_with_distances(target: np.ndarray) -> torch.Tensor:
    """Unit vectors whose pairwise cosine distances equal `target` (Gram = 1 − target must be PSD)."""
    w, v = np.linalg.eigh(1.0 - target)
    assert w.min() > -1e-9
    return torch.tensor(v * np.sqrt(np.clip(w, 0, None)), dtype=torch.float64)


def test_weighted_loss_zero_when_distances_proportional_to_score_gaps():
    scores = np.array([20.0, 22.0, 25.0, 27.0])
    gaps = np.abs(scores[:, None] - scores[None]) / 7.0
    m = 0.5
    target = m * gaps / gaps[~np.eye(4, dtype=bool)].mean()
    u = _embeddings_with_distances(target)
    torch.testing.assert_close(pairwise_cosine_distance(u).double(), torch.tensor(target), atol=1e-6, rtol=0)
    s = torch.tensor(scores)
    assert contrastive_loss(u, s, 7.0, "weighted", margin=m) < 1e-10
    assert contrastive_loss(_embeddings_with_distances(target * 0.5), s, 7.0, "weighted", margin=m) > 1e-3


def test_same_subject_pairs_are_excluded():
    u = torch.eye(3)  # every pair at distance 1
    scores = torch.tensor([0.0, 0.0, 10.0])  # items 0 and 1: same subject, same bin, yet far apart
    with_pair = contrastive_loss(u, scores, 10.0, "plain")
    without = contrastive_loss(u, scores, 10.0, "plain", subjects=torch.tensor([0, 0, 1]))
    assert with_pair > 0 and without == 0


def test_lambda_zero_is_exactly_the_mse_baseline():
    torch.manual_seed(0)
    pred = torch.randn(6, requires_grad=True)
    target = torch.randn(6)
    feats = torch.full((6, 4), float("nan"), requires_grad=True)  # not even looked at when λ = 0
    out = learner_loss(pred, target, feats, torch.randn(6), 1.0, weight=0.0)
    ref = F.mse_loss(pred, target)
    assert torch.equal(out["loss"], ref) and "con" not in out
    g, = torch.autograd.grad(out["loss"], pred)
    g_ref, = torch.autograd.grad(ref, pred)
    assert torch.equal(g, g_ref)


# ------------------------------------------------------------------------------------------ CLI end to end
@pytest.fixture
def tiny(tmp_path, monkeypatch):
    from tiny_score_dataset import make_tiny_score_dataset
    from tiny_seg_dataset import set_env

    set_env(monkeypatch, tmp_path)
    make_tiny_score_dataset(tmp_path)
    return tmp_path


TINY = ["--preset", "tiny", "--image-size", "16", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1",
        "-device", "cpu"]


def _weights(path):
    return torch.load(path, weights_only=True)["network_weights"]


def test_lambda_zero_training_ignores_the_contrastive_settings(tiny, monkeypatch):
    from longnet.cli.train import main as train_main
    from tiny_score_dataset import DATASET

    base = [DATASET, "3d_fullres", "0", "-tr", "LEARNERTrainer", "--contrastive-weight", "0"] + TINY
    assert train_main(base) == 0
    first = _weights(tiny / "results" / DATASET / "LEARNERTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth")
    monkeypatch.setenv("LONGNET_RESULTS", str(tiny / "results2"))
    assert train_main(base + ["--contrastive", "plain", "--margin", "0.9"]) == 0
    second = _weights(tiny / "results2" / DATASET / "LEARNERTrainer__nnUNetPlans__3d_fullres/fold_0/"
                      "checkpoint_final.pth")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_learner_train_predict_evaluate(tiny):
    from longnet.cli.evaluate import main as evaluate_main
    from longnet.cli.predict import main as predict_main
    from longnet.cli.train import main as train_main
    from tiny_score_dataset import DATASET

    results = tiny / "results" / DATASET
    raw = tiny / "raw" / DATASET
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "LEARNERTrainer"] + TINY) == 0
    fold = results / "LEARNERTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    assert json.loads((fold / "validation" / "summary.json").read_text())["num_subjects"] == 2
    out = tiny / "pred_encoder"
    common = ["-i", str(raw / "imagesTs"), "-d", DATASET, "-c", "3d_fullres", "-f", "0", "-device", "cpu",
              "--patients", str(raw / "patientsTs.json"), "--visits", str(raw / "visitsTs.csv")]
    assert predict_main(["-o", str(out), "-tr", "LEARNERTrainer"] + common) == 0
    for name in ("embeddings.npz", "embeddings.csv", "trajectories.png", "predicted_scores.csv"):
        assert (out / name).is_file(), name
    with np.load(out / "embeddings.npz") as z:
        assert list(z["cases"]) == [f"{s}_v{k}" for s in ("t0", "t1") for k in range(3)]
        assert z["embeddings"].shape == (6, 64)
    assert evaluate_main([str(raw), str(out), "--task", "embedding", "--patients", str(raw / "patientsTs.json")]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert 0 <= s["MCCD"] <= 2 and s["num_pairs"] == 4 and "spearman_distance_vs_abs_score_change" in s

    # stage 2 on the stage-1 encoder (frozen), then change predictions and their evaluation
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "LEARNERChangeTrainer", "--encoder",
                       str(fold / "checkpoint_final.pth"), "--delta", "1.0", "--epochs", "2", "--iters-per-epoch",
                       "2", "-device", "cpu"]) == 0
    change_fold = results / "LEARNERChangeTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    assert "val_macro_F1" in json.loads((change_fold / "validation" / "summary.json").read_text())
    out2 = tiny / "pred_change"
    assert predict_main(["-o", str(out2), "-tr", "LEARNERChangeTrainer"] + common) == 0
    rows = list(csv.DictReader(open(out2 / "change_predictions.csv")))
    assert [(r["case_from"], r["case"]) for r in rows][:2] == [("t0_v0", "t0_v1"), ("t0_v1", "t0_v2")]
    assert len(rows) == 4 and all(abs(sum(float(r[f"prob_{k}"]) for k in range(3)) - 1) < 1e-4 for r in rows)
    assert all(r["target"] == "worsen" for r in rows if float(r["score_change"]) < -1.0)
    assert evaluate_main([str(raw), str(out2), "--task", "classification", "--delta", "1.0"]) == 0
    m = json.loads((out2 / "summary.json").read_text())
    assert m["metrics"]["n"] == 4 and 0 <= m["metrics"]["macro_F1"] <= 1
    assert sum(m["target_counts"].values()) == 4

    # a checkpoint that is not a LEARNERTrainer encoder is refused up front
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "LEARNERChangeTrainer", "--encoder",
                       str(change_fold / "checkpoint_final.pth"), "-device", "cpu"]) == 1

    # fine-tuning variant: the encoder changes, the pretraining checkpoint does not
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "LEARNERChangeTrainer", "--encoder",
                       str(fold / "checkpoint_final.pth"), "--finetune", "--batch-size", "4", "--lr", "1e-2",
                       "--epochs", "1", "--iters-per-epoch", "1", "-device", "cpu"]) == 0
    tuned = _weights(change_fold / "checkpoint_final.pth")
    pre = _weights(fold / "checkpoint_final.pth")
    floats = [k for k in pre if k.startswith("encoder.") and pre[k].is_floating_point()]
    assert any(not torch.equal(tuned[k], pre[k]) for k in floats)
