"""Prior-conditioned segmentation (plugins/longnet_priorseg): priors come from the subject's own earlier visits,
augmentation keeps the two visits paired, prediction chains visit by visit, the networks are the planned
U-Net's, and both trainers train, validate, predict and evaluate through the CLIs on a tiny aligned cohort."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from longnet.data.augmentation import spatial_aug_config
from longnet.data.longitudinal import LongitudinalIndex
from longnet.data.segmentation import foreground_flags
from longnet.planning.network import build_network_from_architecture
from longnet.io.storage import save_case
from longnet_priorseg.network import DiffWeightingUNet, adapt_input_convs
from longnet_priorseg.predict import chain_subject, subject_visits
from longnet_priorseg.priors import PriorTable, network_input_array
from longnet_priorseg.sampler import PriorPatchSampler
from longnet_priorseg.transforms import prior_transforms
from tiny_seg_dataset import set_env, tiny_plans

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after

SHAPE = (8, 16, 16)
VISITS = {"s0": 3, "s1": 2, "s2": 1, "s3": 4}
UNLABELLED = {"s0_v1", "s3_v2"}


def _tiny_prior_dataset(root: Path, identical: bool = False) -> Path:
    """Preprocessed, aligned-looking (one grid per subject) labelled visits: a lesion that grows over time."""
    folder = Path(root) / "pre" / "nnUNetPlans_3d_fullres"
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    visits, subjects = {}, {}
    for s, n in VISITS.items():
        centre = rng.uniform([3, 6, 6], [5, 10, 10])
        base = rng.normal(0, 0.3, SHAPE).astype(np.float32)
        for k in range(n):
            case, days = f"{s}_v{k}", 90.0 * k
            grow = 0 if identical else k
            seg = ((np.sqrt(((z - centre[0]) * 2) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)) < 2 + grow)
            img = base + seg.astype(np.float32) if identical else base + seg + rng.normal(0, 0.1, SHAPE)
            labelled = case not in UNLABELLED
            seg = seg.astype(np.int8)[None] if labelled else np.zeros((1, *SHAPE), np.int8)
            vox = np.argwhere(seg[0] == 1)
            save_case(folder, case, img[None].astype(np.float32), seg,
                      {"spacing": [1.0, 1.0, 1.0], "shape_before_cropping": list(SHAPE),
                       "bbox_used_for_cropping": [[0, v] for v in SHAPE],
                       "shape_after_cropping_and_before_resampling": list(SHAPE),
                       "class_locations": {"1": [[0, *map(int, v)] for v in vox]}, "labelled": labelled,
                       "subject": s, "days": days})
            visits[case] = {"days": days, "subject": s, "visit_index": k, "labelled": labelled, "meta": {}}
            subjects.setdefault(s, []).append(case)
    pre = folder.parent
    (pre / "visits.json").write_text(json.dumps(visits))
    (pre / "subjects.json").write_text(json.dumps(subjects))
    return pre


def _index(pre: Path) -> LongitudinalIndex:
    return LongitudinalIndex(pre, "nnUNetPlans_3d_fullres")


# ---------------------------------------------------------------------------- priors
@pytest.mark.parametrize("mode", ["immediate", "random"])
def test_prior_is_an_earlier_visit_of_the_same_subject(tmp_path, mode):
    index = _index(_tiny_prior_dataset(tmp_path))
    table = PriorTable.from_index(index)
    rng = np.random.default_rng(0)
    seen: dict[str, set[str]] = {}
    for case in index.cases:
        for _ in range(40):
            prior = table.draw(case, mode, rng)
            seen.setdefault(case, set()).add(prior)
            assert index.subject_of(prior) == index.subject_of(case)
            if prior == case:  # fallback only for a first visit
                assert index.visits_of(index.subject_of(case))[0] == case
            else:
                assert index.days(prior) < index.days(case)
    assert seen["s0_v0"] == {"s0_v0"} and seen["s2_v0"] == {"s2_v0"}
    assert seen["s3_v3"] == ({"s3_v2"} if mode == "immediate" else {"s3_v0", "s3_v1", "s3_v2"})
    assert table.immediate("s3_v3") == "s3_v2" and table.immediate("s1_v0") == "s1_v0"
    assert not table.prior_labelled("s0_v2", "s0_v1") and table.prior_labelled("s0_v1", "s0_v0")
    assert not table.prior_labelled("s0_v0", "s0_v0")


def test_a_split_side_never_borrows_priors_from_the_other(tmp_path):
    pre = _tiny_prior_dataset(tmp_path)
    side = ["s0_v1", "s0_v2", "s3_v0", "s3_v3"]  # s0_v0, s3_v1, s3_v2 belong to the other side
    table = PriorTable.from_index(LongitudinalIndex(pre, "nnUNetPlans_3d_fullres", side))
    assert table.immediate("s0_v1") == "s0_v1" and table.immediate("s3_v3") == "s3_v0"
    assert set(table.candidates("s0_v2", "random")) == {"s0_v1"}


def test_sampler_batches_carry_own_earlier_priors(tmp_path):
    pre = _tiny_prior_dataset(tmp_path)
    index = _index(pre)
    table = PriorTable.from_index(index)
    patch = list(SHAPE)
    aug = spatial_aug_config(patch)
    labels = [1]
    tf = prior_transforms(patch, aug, [[1, 1, 1], [0.5, 0.5, 0.5]], 1, labels, train=True)
    cases = [c for c in index.cases if c not in UNLABELLED]
    sampler = PriorPatchSampler(pre / "nnUNetPlans_3d_fullres", cases, aug.initial_patch_size, patch,
                                foreground_flags(4, 0, 4), tf, table, "random", True)
    for seed in range(5):
        batch = sampler.make_batch(np.random.default_rng(seed))
        assert batch["data"].shape == (4, 2 + len(labels), *SHAPE)
        assert [t.shape[2:] for t in batch["target"]] == [SHAPE, (4, 8, 8)]
        for case, prior in zip(batch["keys"], batch["priors"]):
            assert index.subject_of(prior) == index.subject_of(case)
            assert prior == case and index.visits_of(index.subject_of(case))[0] == case \
                or index.days(prior) < index.days(case)


# ---------------------------------------------------------------------------- paired augmentation
def test_identical_visits_stay_identical_after_augmentation(tmp_path):
    pre = _tiny_prior_dataset(tmp_path, identical=True)
    index = _index(pre)
    table = PriorTable.from_index(index)
    patch = list(SHAPE)
    aug = spatial_aug_config(patch)
    cases = [c for c in index.cases if c not in UNLABELLED and not c.endswith("_v0")]
    for intensity, equal in (("same", True), ("independent", False)):
        tf = prior_transforms(patch, aug, None, 1, [], train=True, intensity=intensity)
        sampler = PriorPatchSampler(pre / "nnUNetPlans_3d_fullres", cases, aug.initial_patch_size, patch,
                                    foreground_flags(2, 0, 2), tf, table, "random", False)
        diffs = []
        for seed in range(8):
            np.random.seed(seed)
            torch.manual_seed(seed)
            batch = sampler.make_batch(np.random.default_rng(seed))
            assert all(p != k for p, k in zip(batch["priors"], batch["keys"]))
            d = batch["data"]
            diffs.append(float((d[:, 0] - d[:, 1]).abs().max()))
        if equal:
            assert max(diffs) < 1e-4, diffs
        else:  # the check above is not vacuous: independent draws separate the channels
            assert max(diffs) > 1e-3


def test_prior_segmentation_channels(tmp_path):
    pre = _tiny_prior_dataset(tmp_path)
    table = PriorTable.from_index(_index(pre))
    patch = list(SHAPE)
    tf = prior_transforms(patch, spatial_aug_config(patch), None, 1, [1], train=False)

    def one(case):
        s = PriorPatchSampler(pre / "nnUNetPlans_3d_fullres", [case], patch, patch, [False], tf, table,
                              "immediate", True)
        return s.make_batch(np.random.default_rng(0))

    labelled_prior = one("s0_v1")        # prior s0_v0 is labelled: its ground truth, one-hot
    assert labelled_prior["priors"] == ["s0_v0"] and labelled_prior["data"][0, 2].sum() > 0
    assert float(labelled_prior["data"][0, 2].max()) == 1.0
    for case in ("s0_v2", "s0_v0"):      # unlabelled prior / first visit: zeros
        assert float(one(case)["data"][0, 2].abs().sum()) == 0.0
    x = network_input_array(np.ones((2, *SHAPE)), np.zeros((2, *SHAPE)), None, [1, 2])
    assert x.shape == (6, *SHAPE) and x[4:].sum() == 0 and x[:2].min() == 1


# ---------------------------------------------------------------------------- chained prediction
def test_chain_uses_the_previous_visits_prediction(tmp_path):
    calls = []

    def step(case, prior, prior_result):
        calls.append((case, prior, None if prior_result is None else prior_result["seg"]))
        return {"seg": f"prediction of {case}"}

    out = chain_subject(["v1", "v2", "v3"], step)
    assert calls == [("v1", None, None), ("v2", "v1", "prediction of v1"), ("v3", "v2", "prediction of v2")]
    assert out["v3"]["seg"] == "prediction of v3"
    patients = tmp_path / "patientsTs.json"
    patients.write_text(json.dumps({"a": ["a_late", "a_early"], "b": ["b0"]}))
    (tmp_path / "visitsTs.csv").write_text("case,days\na_late,300\na_early,10\nb0,0\n")
    assert subject_visits(str(patients), None, ["a_early", "a_late", "b0", "lone"]) == \
        {"a": ["a_early", "a_late"], "b": ["b0"], "lone": ["lone"]}


# ---------------------------------------------------------------------------- networks
def _arch() -> dict:
    return tiny_plans()["configurations"]["3d_fullres"]["architecture"]


def test_difference_weighting_starts_as_the_plain_unet():
    torch.manual_seed(0)
    unet = build_network_from_architecture(_arch(), 1, 2, deep_supervision=False)
    net = DiffWeightingUNet(unet, 1)
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), unet(x[:, :1]), atol=1e-6)
        for f in net.fusion:
            f.gamma.fill_(0.5)
        assert not torch.allclose(net(x), unet(x[:, :1]), atol=1e-4)
        same = torch.cat([x[:, :1], x[:, :1]], 1)
        a = net.fusion[0].weights(*net.encoder(torch.cat([x[:, :1], x[:, :1]]))[0].chunk(2))
        assert a.shape[1] == net.encoder.output_channels[0]
    assert net(same).shape == (2, 2, 16, 16, 16)
    assert all(k.startswith(("encoder.", "decoder.", "fusion.")) for k in net.state_dict())
    assert set(unet.state_dict()) <= set(net.state_dict())  # plain U-Net checkpoints load by name


@pytest.mark.parametrize("mode", ["zero", "copy"])
def test_adapt_first_conv_from_a_single_visit_checkpoint(mode):
    torch.manual_seed(0)
    pretrained = build_network_from_architecture(_arch(), 2, 3).state_dict()
    net = build_network_from_architecture(_arch(), 2 * 2 + 2, 3)  # current 2 + prior 2 + 2 one-hot labels
    names = adapt_input_convs(net, pretrained, 2, mode, log=lambda _: None)
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert key in names
    w, src = net.state_dict()[key], pretrained[key]
    scale = 0.5 if mode == "copy" else 1.0
    assert torch.allclose(w[:, :2], scale * src)
    assert torch.allclose(w[:, 2:4], scale * src if mode == "copy" else torch.zeros_like(src))
    assert float(w[:, 4:].abs().sum()) == 0.0


# ---------------------------------------------------------------------------- end to end through the CLIs
def _fake_longrep_checkpoint(pre: Path, dest: Path) -> Path:
    """A plain planned U-Net's weights (as LongRepPretrainer saves them: C input channels)."""
    from longnet.io.checkpoints import save_checkpoint

    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    unet = build_network_from_architecture(arch, 2, 3)
    save_checkpoint({"network_weights": unet.state_dict(), "trainer_name": "LongRepPretrainer"}, dest)
    return dest


def test_train_predict_evaluate_through_the_clis(tmp_path, monkeypatch, capsys):
    from longnet.cli.evaluate import main as evaluate_main
    from longnet.cli.plan_and_preprocess import main_plan_and_preprocess
    from longnet.cli.predict import main as predict_main
    from longnet.cli.train import main as train_main
    from longnet.demo.synthetic import generate_demo_dataset

    set_env(monkeypatch, tmp_path)
    raw = generate_demo_dataset(tmp_path / "raw", 2, 1, (12, 16, 14), seed=1, min_visits=3, max_visits=3)
    assert main_plan_and_preprocess(["-d", "990", "-c", "3d_fullres", "-np", "1", "--align", "rigid"]) == 0
    pre = next((tmp_path / "preprocessed").glob("Dataset990_*"))
    ckpt = _fake_longrep_checkpoint(pre, tmp_path / "longrep.pth")
    patients = json.loads((raw / "patientsTs.json").read_text())
    (subject, cases), = patients.items()
    short = ["--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "-device", "cpu",
             "--no-validation-mirroring"]
    runs = {"PriorConcatTrainer": ["--prior-seg", "gt", "--prior", "random", "--pretrained-weights", str(ckpt),
                                   "--prior-init", "copy"],
            "DiffWeightingTrainer": ["--pretrained-weights", str(ckpt), "--transfer", "all", "--optimizer", "adam",
                                     "--lr", "2e-3"]}
    for trainer, extra in runs.items():
        capsys.readouterr()
        assert train_main(["990", "3d_fullres", "all", "-tr", trainer] + short + extra) == 0
        model = next((tmp_path / "results").glob(f"Dataset990_*/{trainer}__nnUNetPlans__3d_fullres"))
        log = "".join(p.read_text() for p in (model / "fold_all").glob("training_log*.txt"))
        assert "pretrained weights" in log
        if trainer == "PriorConcatTrainer":
            assert "adapted encoder.stages.0.0.convs.0.conv.weight" in log
        state = torch.load(model / "fold_all" / "checkpoint_final.pth", weights_only=True)["optimizer_state"]
        assert ("exp_avg" in next(iter(state["state"].values()))) == (trainer == "DiffWeightingTrainer")
        summary = json.loads((model / "fold_all" / "validation" / "summary.json").read_text())
        assert summary["metric_per_case"] and "foreground_mean" in summary
        out = tmp_path / f"pred_{trainer}"
        assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(model), "-f", "all",
                             "--patients", str(raw / "patientsTs.json"), "--disable_tta", "-device", "cpu"]) == 0
        record = json.loads((out / "predictions.json").read_text())["visits"]
        assert [record[c]["prior"] for c in cases] == [cases[0], cases[0], cases[1]]
        if trainer == "PriorConcatTrainer":
            assert record[cases[1]]["prior_segmentation"] == f"prediction of {cases[0]}"
            assert record[cases[0]]["prior_segmentation"] == "zeros (first visit)"
        for c in cases:  # written in each visit's own geometry
            p = sitk.ReadImage(str(out / f"{c}.nii.gz"))
            r = sitk.ReadImage(str(raw / "imagesTs" / f"{c}_0000.nii.gz"))
            assert p.GetSize() == r.GetSize() and np.allclose(p.GetOrigin(), r.GetOrigin())
        assert evaluate_main([str(raw / "labelsTs"), str(out), "-d", "990", "--patients",
                              str(raw / "patientsTs.json")]) == 0
        lesions = json.loads((out / "summary.json").read_text())["lesions"]
        assert lesions["label"] == "lesion" and set(lesions["per_visit"]) == set(cases)
        assert lesions["overall"]["num_pairs"] == 2
    # the pair is augmented per sample on the CPU: no --augmentation flag
    assert train_main(["990", "3d_fullres", "all", "-tr", "DiffWeightingTrainer", "--augmentation", "gpu"]
                      + short) == 2
    assert "unrecognized arguments: --augmentation gpu" in capsys.readouterr().err
