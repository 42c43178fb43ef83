"""Unit checks of the segmentation building blocks: losses, oversampling, patch boxes, loader seeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from longnet.data.augmentation import spatial_aug_config
from longnet.data.cases import bbox_for_patch, crop_and_pad
from longnet.data.loader import batch_iterator
from longnet.data.segmentation import foreground_flags
from longnet.training.distributed import split_batch
from longnet.training.losses import DiceBCELoss, DiceCELoss, SoftDiceLoss, deep_supervision_weights
from longnet.training.schedulers import PolyLRScheduler


def test_deep_supervision_weights_halve_and_drop_the_lowest():
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0])
    assert deep_supervision_weights(1) == [1.0]


def test_dice_is_minus_one_for_a_perfect_prediction_and_ignore_label_is_masked():
    target = torch.randint(0, 3, (2, 1, 6, 6, 6))
    logits = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 50
    dice = SoftDiceLoss(lambda t: torch.softmax(t, 1), batch_dice=True, do_bg=False)
    assert dice(logits, target).item() == pytest.approx(-1, abs=1e-4)
    loss = DiceCELoss(batch_dice=False, ignore_label=3)
    with_ignore = target.clone()
    with_ignore[:, :, :2] = 3  # these voxels must not matter
    noisy = logits.clone()
    noisy[:, :, :2] = torch.randn_like(noisy[:, :, :2]) * 10
    assert loss(noisy, with_ignore).item() == pytest.approx(loss(logits, with_ignore).item(), abs=1e-5)


def test_region_loss_with_ignore_channel():
    regions = torch.randint(0, 2, (2, 2, 4, 4, 4)).float()
    ignore = torch.zeros(2, 1, 4, 4, 4)
    logits = (regions * 2 - 1) * 50
    loss = DiceBCELoss(batch_dice=True, use_ignore_label=True)
    assert loss(logits, torch.cat([regions, ignore], 1)).item() == pytest.approx(-1, abs=1e-3)


def test_foreground_oversampling_matches_nnunet_and_spreads_over_ranks():
    assert foreground_flags(2, 0, 2) == [False, True]
    assert sum(foreground_flags(9, 0, 9)) == 3 and foreground_flags(1, 0, 1) == [False]
    local = [split_batch(2, 2, r) for r in range(2)]
    assert local == [(1, 0), (1, 1)]
    assert [foreground_flags(2, off, bs) for bs, off in local] == [[False], [True]]
    assert [split_batch(5, 2, r) for r in range(2)] == [(3, 0), (2, 3)]


def test_patch_geometry():
    assert spatial_aug_config([16, 16, 16]).initial_patch_size == [25, 25, 25]
    cfg = spatial_aug_config([20, 192, 160])
    assert cfg.dummy_2d and cfg.initial_patch_size[0] == 20
    rng = np.random.default_rng(0)
    for _ in range(50):  # random boxes stay within nnU-Net's range (half the enlargement past the border)
        lo = bbox_for_patch((10, 30, 30), [25, 25, 25], rng, extra_pad=[9, 9, 9])
        assert -8 <= lo[0] and lo[1] >= -4 and lo[1] + 25 <= 30 + 5
    assert bbox_for_patch((40, 40, 40), [16, 16, 16], rng, center_voxel=[20, 2, 30]) == [12, 0, 22]
    assert bbox_for_patch((40, 40, 40), [24, 24, 24], rng, [20, 2, 30], extra_pad=[8, 8, 8]) == [8, -4, 18]
    arr = np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4)
    out = crop_and_pad(arr, [-1, 0, 2], [3, 4, 4], -1)
    assert out.shape == (2, 3, 4, 4) and (out[:, 0] == -1).all() and (out[:, 1:, :, 2:] == -1).all()
    assert np.array_equal(out[:, 1:, :, :2], arr[:, :2, :, 2:])


def test_loader_batches_depend_only_on_their_index():
    def make(rng):
        return {"x": torch.tensor(rng.integers(0, 10 ** 6)), "t": torch.rand(1), "n": np.random.rand()}

    a = [next(it) for it in [batch_iterator(make, seed=1, start_index=0, num_workers=0)] for _ in range(4)]
    b = batch_iterator(make, seed=1, start_index=2, num_workers=0)
    later = next(b)
    assert later["x"] == a[2]["x"] and torch.equal(later["t"], a[2]["t"]) and later["n"] == a[2]["n"]
    other_rank = next(batch_iterator(make, seed=1, rank=1, start_index=2, num_workers=0))
    assert other_rank["x"] != a[2]["x"]


def test_poly_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    sched = PolyLRScheduler(opt, 10)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-2, 1e-2 * 0.9 ** 0.9, 1e-2 * 0.8 ** 0.9])


def _ddp_batch_dice_worker(rank: int, port: int, logits: torch.Tensor, target: torch.Tensor, out: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)  # as longnet's own DDP workers: a forked OpenMP pool must be re-created
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x = logits[rank:rank + 1].clone().requires_grad_(True)
        loss = SoftDiceLoss(lambda t: torch.softmax(t, 1), batch_dice=True, do_bg=False)(x, target[rank:rank + 1])
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": x.grad}, f"{out}.{rank}")
    finally:
        tdist.destroy_process_group()


def test_batch_dice_under_ddp_is_the_global_batch_dice(tmp_path):
    """Two gloo ranks with one sample each get the loss (and gradient) of one process holding both samples."""
    import torch.multiprocessing as mp

    from longnet.training.distributed import free_port

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 1, 6, 6, 6), generator=g)
    target[1] = 0  # rank 1 alone has no foreground: its local batch Dice would differ a lot
    whole = logits.clone().requires_grad_(True)
    ref = SoftDiceLoss(lambda t: torch.softmax(t, 1), batch_dice=True, do_bg=False)(whole, target)
    ref.backward()
    out = str(tmp_path / "r")
    mp.start_processes(_ddp_batch_dice_worker, args=(free_port(), logits, target, out), nprocs=2,
                       start_method="fork")
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert torch.allclose(got["loss"], ref.detach(), atol=1e-6)
        # DDP averages gradients over ranks; the all-reduce's backward sums them, so rank grads = world × ref grad
        assert torch.allclose(got["grad"][0] / 2, whole.grad[rank], atol=1e-6)


def test_final_validation_line_explains_an_undefined_mean():
    from longnet.dataset.labels import LabelManager
    from longnet.training.seg_validation import _dice_line

    lm = LabelManager.from_dataset_json({"labels": {"background": 0, "ventricles": 1, "lesion": 2}})
    nan = float("nan")
    line = _dice_line({"foreground_mean": {"Dice": nan}, "mean": {"1": {"Dice": 0.9}, "2": {"Dice": nan}}}, lm)
    assert "label 2 (lesion) is in neither reference nor prediction" in line and "other labels 0.9000" in line
    assert _dice_line({"foreground_mean": {"Dice": 0.8}, "mean": {"1": {"Dice": 0.9}, "2": {"Dice": 0.7}}}, lm) \
        == "mean foreground Dice 0.8000"
