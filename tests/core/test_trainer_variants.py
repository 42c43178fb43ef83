"""nnU-Net's trainer variants by name: registration, what each changes, and that their models predict."""
from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest
import torch

from longnet.cli.train import main as train_main
from longnet.data.augmentation import validation_transforms
from longnet import registry
from longnet.errors import LongnetError
from longnet.inference.predictor import Predictor
from longnet.registry import get_trainer
from longnet.training import variants
from longnet.io.checkpoints import load_checkpoint, save_checkpoint
from longnet.training.launch import TrainRequest, build_trainer, load_split, _available_cases
from longnet.training.schedulers import PolyLRScheduler, WarmupCosineScheduler
from tiny_seg_dataset import DATASET, fold_dir

FAST = ["--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1", "--no-validation-mirroring",
        "-device", "cpu"]
REQUESTED = (["nnUNetTrainer_1epoch"] + [f"nnUNetTrainer_{n}epochs" for n in (5, 10, 20, 50, 100, 250, 500, 750,
                                                                                2000, 4000, 8000)]
             + [f"nnUNetTrainer_{n}epochs_NoMirroring" for n in (250, 2000, 4000, 8000)]
             + ["nnUNetTrainerNoMirroring", "nnUNetTrainer_onlyMirror01", "nnUNetTrainerNoDeepSupervision",
                "nnUNetTrainerNoDA", "nnUNetTrainerCELoss", "nnUNetTrainerDiceLoss", "nnUNetTrainerDiceCELoss_noSmooth",
                "nnUNetTrainerCosAnneal", "nnUNetTrainerAdam", "nnUNetTrainerAdam1en3", "nnUNetTrainerAdam3en4",
                "nnUNetTrainerVanillaAdam", "nnUNetTrainerVanillaAdam1en3", "nnUNetTrainerVanillaAdam3en4",
                "nnUNetTrainerBN", "nnUNetTrainer_probabilisticOversampling",
                "nnUNetTrainer_probabilisticOversampling_033", "nnUNetTrainer_probabilisticOversampling_010"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after



def _trainer(name: str, options: dict | None = None, initialize: bool = True):
    """A variant on the tiny dataset, set up (and initialised) in this process, without writing anything."""
    opts = {"epochs": None, "iters_per_epoch": 1, "val_iters": 1, **(options or {})}
    trainer, _, pre_dir, _ = build_trainer(TrainRequest(DATASET, "3d_fullres", 0, trainer_name=name, device="cpu",
                                                        options=opts))
    train, val = load_split(pre_dir, 0, _available_cases(pre_dir, trainer.configuration_manager.data_identifier),
                            create=False)
    trainer.setup(pre_dir, None, train, val, verbose=False)
    if initialize:
        trainer.initialize()
    return trainer


def _first_batch(trainer) -> dict:
    return trainer.prepare_batch(next(iter(trainer.train_loader())))


def test_every_variant_is_an_entry_point_and_resolves_by_name():
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    lines = cfg["options.entry_points"]["longnet.trainers"].strip().splitlines()
    in_setup = {ln.split("=")[0].strip() for ln in lines if "longnet.training.variants:" in ln}
    assert in_setup == set(variants.variant_names())
    assert set(REQUESTED) <= in_setup
    for name in variants.variant_names():
        cls = get_trainer(name)
        assert cls is getattr(variants, name) and cls.__name__ == name and cls.__doc__


def test_variants_longnet_does_not_provide_say_why():
    with pytest.raises(LongnetError, match="nnUNetTrainerDA5 is an nnU-Net variant that longnet does not provide"):
        get_trainer("nnUNetTrainerDA5")
    with pytest.raises(LongnetError, match="adan-pytorch"):
        get_trainer("nnUNetTrainerAdan1en3")
    assert not set(registry.NOT_PROVIDED) & set(variants.variant_names())


def test_epoch_variants_and_explicit_epochs_wins(tiny):
    assert get_trainer("nnUNetTrainer_250epochs").num_epochs == 250
    assert get_trainer("nnUNetTrainer_1epoch").num_epochs == 1
    assert issubclass(get_trainer("nnUNetTrainer_4000epochs_NoMirroring"), variants.nnUNetTrainerNoMirroring)
    assert _trainer("nnUNetTrainer_250epochs", initialize=False).num_epochs == 250
    assert _trainer("nnUNetTrainer_250epochs", {"epochs": 3}, initialize=False).num_epochs == 3
    t = _trainer("nnUNetTrainer_2000epochs_NoMirroring", initialize=False)
    assert t.num_epochs == 2000 and t.inference_allowed_mirroring_axes is None and t.aug.mirror_axes == ()


def test_mirroring_axes_of_the_mirroring_variants(tiny):
    assert _trainer("nnUNetTrainer", initialize=False).inference_allowed_mirroring_axes == (0, 1, 2)
    only01 = _trainer("nnUNetTrainer_onlyMirror01", initialize=False)
    assert only01.aug.mirror_axes == (0, 1) and only01.inference_allowed_mirroring_axes == (0, 1)
    t = _trainer("nnUNetTrainerNoMirroring", {"augmentation": "gpu"}, initialize=False)
    t._sampler(t.train_cases[:2], train=True)
    assert t.batch_augmenter is not None and t.batch_augmenter.aug.mirror_axes == ()


def test_no_mirroring_checkpoint_has_no_axes_and_prediction_runs_without_tta(tiny):
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "nnUNetTrainerNoMirroring",
                       "--disable-final-validation"] + FAST) == 0
    fd = fold_dir(tiny, "nnUNetTrainerNoMirroring")
    assert load_checkpoint(fd / "checkpoint_final.pth")["inference_allowed_mirroring_axes"] is None
    predictor = Predictor.from_model_folder(fd.parent, device="cpu")
    assert predictor.mirror_axes is None
    calls = []
    predictor.network.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    data = torch.randn(1, 16, 20, 16)
    predictor.predict_preprocessed(data)
    without_tta = sum(calls)
    calls.clear()
    Predictor(predictor.network, predictor.plans, predictor.configuration_name, predictor.dataset_json,
              mirror_axes=(0, 1, 2), device="cpu").predict_preprocessed(data)
    assert sum(calls) == 8 * without_tta  # the same model with TTA runs 8 passes per tile


def test_no_deep_supervision_trains_with_a_single_output(tiny):
    t = _trainer("nnUNetTrainerNoDeepSupervision")
    batch = _first_batch(t)
    assert torch.is_tensor(batch["target"]) and torch.is_tensor(t.network(batch["data"]))
    out = t._train_one(batch)
    assert np.isfinite(float(out["loss"]))


def test_no_da_cuts_final_patches_without_augmentation(tiny):
    t = _trainer("nnUNetTrainerNoDA", {"augmentation": "gpu"}, initialize=False)
    sampler = t._sampler(t.train_cases[:2], train=True)
    assert sampler.patch_size == [16, 16, 16] and t.batch_augmenter is None
    plain = validation_transforms(t.deep_supervision_scales).transforms
    assert [type(x) for x in sampler.transforms.transforms] == [type(x) for x in plain]
    assert t.inference_allowed_mirroring_axes is None


def test_loss_variants_change_the_loss_on_the_same_batch(tiny):
    base = _trainer("nnUNetTrainer")
    batch = _first_batch(base)

    def loss_of(name):
        t = _trainer(name)  # same seed: the same initial network
        with torch.no_grad():
            return float(t.loss(t.network(batch["data"]), batch["target"]))

    default, ce, dice = (loss_of(n) for n in ("nnUNetTrainer", "nnUNetTrainerCELoss", "nnUNetTrainerDiceLoss"))
    assert ce > 0 > dice  # soft Dice loss is negative
    assert default == pytest.approx(ce + dice, rel=1e-5)
    assert len({default, ce, dice}) == 3
    assert base.loss.loss.dice.smooth == 1e-5
    assert _trainer("nnUNetTrainerDiceCELoss_noSmooth").loss.loss.dice.smooth == 0


@pytest.mark.parametrize("name,cls,lr,amsgrad", [
    ("nnUNetTrainer", torch.optim.SGD, 1e-2, None),
    ("nnUNetTrainerAdam", torch.optim.AdamW, 1e-2, True),
    ("nnUNetTrainerAdam1en3", torch.optim.AdamW, 1e-3, True),
    ("nnUNetTrainerAdam3en4", torch.optim.AdamW, 3e-4, True),
    ("nnUNetTrainerVanillaAdam", torch.optim.Adam, 1e-2, False),
    ("nnUNetTrainerVanillaAdam1en3", torch.optim.Adam, 1e-3, False),
    ("nnUNetTrainerVanillaAdam3en4", torch.optim.Adam, 3e-4, False),
])
def test_optimizer_variants(tiny, name, cls, lr, amsgrad):
    t = _trainer(name)
    assert type(t.optimizer) is cls and t.optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert t.optimizer.param_groups[0]["weight_decay"] == pytest.approx(3e-5)
    if amsgrad is not None:
        assert t.optimizer.param_groups[0]["amsgrad"] is amsgrad
    assert isinstance(t.lr_scheduler, PolyLRScheduler)


def test_cosine_annealing_variant(tiny):
    t = _trainer("nnUNetTrainerCosAnneal", {"epochs": 4})
    assert isinstance(t.lr_scheduler, WarmupCosineScheduler)
    lrs = []
    for _ in range(4):
        lrs.append(t.optimizer.param_groups[0]["lr"])
        t.optimizer.step()
        t.lr_scheduler.step()
    assert lrs == pytest.approx([1e-2 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])


def test_probabilistic_oversampling_variants(tiny):
    t = _trainer("nnUNetTrainer_probabilisticOversampling", initialize=False)
    assert t.oversample_foreground_percent == 0.5  # batch 2: the default quota makes 1 of 2 foreground
    sampler = t._sampler(t.train_cases, train=False)
    assert sampler.fg_probability == 0.5
    for name, p in (("nnUNetTrainer_probabilisticOversampling_033", 0.33),
                    ("nnUNetTrainer_probabilisticOversampling_010", 0.1)):
        assert _trainer(name, initialize=False).oversample_foreground_percent == p
    # probability 1: every sample centred on foreground, whatever the quota flags say
    sampler.fg_probability, sampler.fg_flags = 1.0, [False, False]
    seen = []
    sampler.sample = lambda key, fg, rng: seen.append(fg) or {"image": torch.zeros(1, 16, 16, 16),
                                                              "segmentation": torch.zeros(1, 16, 16, 16)}
    sampler.make_batch(np.random.default_rng(0))
    assert seen == [True, True]


def test_batchnorm_variant_trains_and_its_model_predicts_with_batchnorm(tiny):
    assert train_main([DATASET, "3d_fullres", "0", "-tr", "nnUNetTrainerBN", "--epochs", "1", "--iters-per-epoch", "2",
                       "--val-iters", "1", "--no-validation-mirroring", "-device", "cpu"]) == 0
    fd = fold_dir(tiny, "nnUNetTrainerBN")
    assert (fd / "validation" / "summary.json").is_file()  # final validation predicted with the BN network
    ckpt = load_checkpoint(fd / "checkpoint_final.pth")
    assert ckpt["arch_kwargs_overrides"] == {"norm_op": "torch.nn.modules.batchnorm.BatchNorm3d"}
    assert any(k.endswith("running_mean") for k in ckpt["network_weights"])

    def norms(predictor):
        names = {type(m).__name__ for m in predictor.network.modules()}
        return {n for n in names if n.endswith(("Norm2d", "Norm3d"))}

    predictor = Predictor.from_model_folder(fd.parent, device="cpu")
    assert norms(predictor) == {"BatchNorm3d"}
    logits = predictor.predict_preprocessed(torch.randn(1, 16, 20, 16))
    assert logits.shape == (3, 16, 20, 16) and torch.isfinite(logits).all()
    # a checkpoint without the key (as nnU-Net writes them) gets the network of the trainer it names
    del ckpt["arch_kwargs_overrides"]
    save_checkpoint(ckpt, fd / "checkpoint_final.pth")
    assert norms(Predictor.from_model_folder(fd.parent, device="cpu")) == {"BatchNorm3d"}


@pytest.mark.parametrize("name", ["nnUNetTrainerNoDA", "nnUNetTrainer_probabilisticOversampling",
                                  "nnUNetTrainerDiceLoss", "nnUNetTrainer_onlyMirror01"])
def test_variants_train_through_the_command(tiny, name):
    assert train_main([DATASET, "3d_fullres", "0", "-tr", name, "--disable-final-validation"] + FAST) == 0
    ckpt = load_checkpoint(fold_dir(tiny, name) / "checkpoint_final.pth")
    assert ckpt["trainer_name"] == name and ckpt["current_epoch"] == 1
