"""Core pieces shared by the representation trainers: embedding metrics, export + trajectory plot, the
improve/stable/worsen definition and `longnet_evaluate --task classification --delta`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from longnet.evaluation.change import change_class, change_targets, consecutive_pairs
from longnet.evaluation.embedding import embedding_summary, mccd


def test_mccd_zero_for_constant_trajectories_and_within_0_2():
    rng = np.random.default_rng(0)
    const = {f"{s}_{k}": v for s in "ab" for v in [rng.normal(size=8)] for k in range(4)}
    subjects = {s: [f"{s}_{k}" for k in range(4)] for s in "ab"}
    assert mccd(const, subjects)["MCCD"] == pytest.approx(0.0, abs=1e-12)
    flip = {f"a_{k}": np.array([1.0, 0.0]) * (-1) ** k for k in range(4)}
    assert mccd(flip, {"a": [f"a_{k}" for k in range(4)]})["MCCD"] == pytest.approx(2.0)
    rand = {f"{s}_{k}": rng.normal(size=5) for s in "abc" for k in range(3)}
    value = mccd(rand, {s: [f"{s}_{k}" for k in range(3)] for s in "abc"})["MCCD"]
    assert 0.0 <= value <= 2.0


def test_embedding_summary_between_subjects_and_spearman():
    e = {"a0": [1.0, 0.0], "a1": [1.0, 0.1], "a2": [1.0, 0.3], "b0": [0.0, 1.0], "b1": [0.05, 1.0]}
    e = {k: np.array(v) for k, v in e.items()}
    subjects = {"A": ["a0", "a1", "a2"], "B": ["b0", "b1"]}
    scores = {"a0": 30.0, "a1": 29.0, "a2": 25.0, "b0": 20.0, "b1": 19.5}
    s = embedding_summary(e, subjects, scores)
    assert s["MCCD"] < 0.05 < 0.7 < s["between_subject_distance"] and s["num_subject_pairs"] == 1
    assert s["num_pairs"] == 3 and s["spearman_distance_vs_abs_score_change"] == pytest.approx(1.0)


def test_between_subject_gap_correlation_and_first_component_share():
    # scans on a circle: angle = score / 10, so the cosine distance grows monotonically with the score gap
    scores = {"a0": 3.0, "a1": 5.0, "b0": 9.0, "b1": 12.0, "c0": 0.5}  # no two equal gaps
    subjects = {"A": ["a0", "a1"], "B": ["b0", "b1"], "C": ["c0"]}
    on_circle = {c: np.array([np.cos(v / 10), np.sin(v / 10)]) for c, v in scores.items()}
    s = embedding_summary(on_circle, subjects, scores)
    assert s["spearman_between_subject_distance_vs_score_gap"] == pytest.approx(1.0)
    reversed_gap = {c: -v for c, v in scores.items()}  # same gaps: ρ unchanged; shuffled scores: below 1
    assert embedding_summary(on_circle, subjects, reversed_gap)[
        "spearman_between_subject_distance_vs_score_gap"] == pytest.approx(1.0)
    shuffled = dict(zip(scores, [12.0, 1.0, 5.0, 3.0, 9.0]))
    assert embedding_summary(on_circle, subjects, shuffled)["spearman_between_subject_distance_vs_score_gap"] < 0.5
    line = {f"x{k}": np.array([1.0, 0.1 * k, 0.0]) for k in range(5)}  # directions in one plane, one parameter
    spread = {f"x{k}": v for k, v in enumerate(np.random.default_rng(1).normal(size=(5, 6)))}
    from longnet.evaluation.embedding import first_component_share

    assert first_component_share(line) > 0.95 > 0.6 > first_component_share({str(k): v for k, v in spread.items()})


def test_change_classes_and_sign_convention():
    assert [change_class(d, 1.0) for d in (2.0, 1.0, 0.0, -1.0, -1.5)] == [0, 1, 1, 1, 2]
    assert change_class(2.0, 1.0, higher_is_healthier=False) == 2
    subjects = {"s": ["s0", "s1", "s2", "s3"]}
    scores = {"s0": 30.0, "s1": None, "s2": 27.0, "s3": 27.5}
    pairs = consecutive_pairs(subjects, scores)
    assert pairs == [("s", "s0", "s2"), ("s", "s2", "s3")]  # the visit without a score is bridged
    assert change_targets([(a, b) for _, a, b in pairs], scores, 1.0) == {("s0", "s2"): 2, ("s2", "s3"): 1}


def test_save_embeddings_and_plot(tmp_path):
    from longnet.evaluation.embedding import load_embeddings
    from longnet.inference.embeddings import plot_trajectories, project_2d, save_embeddings

    emb = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    cases = ["a0", "a1", "b0", "b1", "c0"]
    npz, table = save_embeddings(cases, emb, tmp_path, {"subject": ["A", "A", "B", "B", "C"]})
    loaded = load_embeddings(npz)
    assert list(loaded) == cases and np.allclose(loaded["b0"], emb[2])
    assert table.read_text().splitlines()[0] == "case,subject,e0,e1,e2,e3"
    coords, method = project_2d(emb, "pca")
    assert coords.shape == (5, 2) and method == "PCA"
    png = plot_trajectories(dict(zip(cases, emb)), {"A": ["a0", "a1"], "B": ["b0", "b1"]}, tmp_path / "t.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_change_predictions_cli(tmp_path):
    from longnet.cli.evaluate import main as evaluate_main

    (tmp_path / "visitsTs.csv").write_text("case,days,score\nx0,0,30\nx1,100,27\nx2,200,27.2\ny0,0,20\ny1,50,23\n")
    (tmp_path / "change_predictions.csv").write_text(
        "case,case_from,subject,prob_0,prob_1,prob_2\n"
        "x1,x0,x,0.1,0.2,0.7\nx2,x1,x,0.1,0.8,0.1\ny1,y0,y,0.6,0.3,0.1\n")
    assert evaluate_main([str(tmp_path), str(tmp_path), "--task", "classification", "--delta", "1.0"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["target_counts"] == {"improve": 1, "stable": 1, "worsen": 1}
    assert s["metrics"]["macro_F1"] == 1.0 and s["metrics"]["accuracy"] == 1.0
    assert s["metrics"]["present_classes"] == ["improve", "stable", "worsen"]
    (tmp_path / "change_predictions.csv").write_text(  # without y: no improving pair in the targets
        "case,case_from,subject,prob_0,prob_1,prob_2\nx1,x0,x,0.1,0.2,0.7\nx2,x1,x,0.1,0.8,0.1\n")
    assert evaluate_main([str(tmp_path), str(tmp_path), "--task", "classification", "--delta", "1.0"]) == 0
    m = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert m["present_classes"] == ["stable", "worsen"] and m["macro_F1"] == 1.0
    assert m["macro_F1_all_classes"] == pytest.approx(2 / 3)
    (tmp_path / "change_predictions.csv").write_text(
        "case,case_from,subject,prob_0,prob_1,prob_2\n"
        "x1,x0,x,0.1,0.2,0.7\nx2,x1,x,0.1,0.8,0.1\ny1,y0,y,0.6,0.3,0.1\n")
    assert evaluate_main([str(tmp_path), str(tmp_path), "--task", "classification", "--delta", "1.0",
                          "--lower-is-healthier"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["target_counts"]["improve"] == 1
