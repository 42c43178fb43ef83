"""nnU-Net's segmentation losses: soft Dice + CE (labels) or Dice + BCE (regions), deep supervision, ignore label."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from longnet.training.distributed import AllReduceSum, process_group_size


class SoftDiceLoss(nn.Module):
    """Negative mean soft Dice over classes; batch_dice sums over the batch too (nnU-Net's memory-efficient form)."""

    def __init__(self, apply_nonlin: Callable | None, batch_dice: bool, do_bg: bool, smooth: float = 1e-5):
        super().__init__()
        self.apply_nonlin, self.batch_dice, self.do_bg, self.smooth = apply_nonlin, batch_dice, do_bg, smooth

    def forward(self, x: torch.Tensor, y: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        axes = tuple(range(2, x.ndim))
        with torch.no_grad():
            if y.shape == x.shape:  # already one-hot / regions
                y_onehot = y.to(x.dtype)
            else:
                y_onehot = torch.zeros_like(x)
                y_onehot.scatter_(1, y.long().clamp_min(0), 1)
            if not self.do_bg:
                y_onehot = y_onehot[:, 1:]
            if loss_mask is not None:
                y_onehot = y_onehot * loss_mask
            sum_gt = y_onehot.sum(axes)
        if not self.do_bg:
            x = x[:, 1:]
        if loss_mask is not None:
            x = x * loss_mask
        intersect = (x * y_onehot).sum(axes)
        sum_pred = x.sum(axes)
        if self.batch_dice:
            intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
            if process_group_size() > 1:  # batch Dice over the *global* batch, as on one GPU (gradients too)
                intersect, sum_pred, sum_gt = (AllReduceSum.apply(t) for t in (intersect, sum_pred, sum_gt))
        dc = (2 * intersect + self.smooth) / (sum_gt + sum_pred + self.smooth).clamp_min(1e-8)
        return -dc.mean()


class DiceCELoss(nn.Module):
    """Soft Dice (softmax, no background) + cross entropy, weights 1:1; the ignore label is masked from both."""

    def __init__(self, batch_dice: bool, ignore_label: int | None = None, weight_ce: float = 1.0,
                 weight_dice: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.dice = SoftDiceLoss(lambda t: torch.softmax(t, 1), batch_dice, do_bg=False, smooth=smooth)
        self.ignore_label, self.weight_ce, self.weight_dice = ignore_label, weight_ce, weight_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        if self.ignore_label is not None:
            mask = (target != self.ignore_label)
            target_dice = torch.where(mask, target, torch.zeros_like(target))
            n_valid = mask.sum()
        else:
            mask, target_dice, n_valid = None, target, None
        dc = self.dice(logits, target_dice, loss_mask=mask) if self.weight_dice else 0
        ce_target = target[:, 0]
        if not self.weight_ce:  # Dice-only training
            ce = 0
        elif self.ignore_label is not None:
            ce = F.cross_entropy(logits, ce_target, ignore_index=self.ignore_label) if n_valid > 0 else logits.sum() * 0
        else:
            ce = F.cross_entropy(logits, ce_target)
        return self.weight_ce * ce + self.weight_dice * dc


class DiceBCELoss(nn.Module):
    """Region-based training: sigmoid soft Dice (all regions) + BCE; with an ignore label its mask is the last
    target channel (added by the region conversion)."""

    def __init__(self, batch_dice: bool, use_ignore_label: bool = False, smooth: float = 1e-5,
                 weight_ce: float = 1.0, weight_dice: float = 1.0):
        super().__init__()
        self.dice = SoftDiceLoss(torch.sigmoid, batch_dice, do_bg=True, smooth=smooth)
        self.use_ignore_label = use_ignore_label
        self.weight_ce, self.weight_dice = weight_ce, weight_dice  # weight_ce weighs the BCE term

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.use_ignore_label:
            mask = 1 - target[:, -1:]
            target = target[:, :-1]
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            bce = (bce * mask).sum() / mask.sum().clamp_min(1e-8) / logits.shape[1]
            dc = self.dice(logits, target, loss_mask=mask) if self.weight_dice else 0
        else:
            bce = F.binary_cross_entropy_with_logits(logits, target)
            dc = self.dice(logits, target) if self.weight_dice else 0
        return self.weight_ce * bce + self.weight_dice * dc


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """1, 1/2, 1/4, ... with the lowest resolution weighted 0, normalised to sum 1 (nnU-Net)."""
    w = [1 / 2 ** i for i in range(n_outputs)]
    if n_outputs > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of `loss` over (outputs, targets) pairs; zero-weight terms skipped unless `keep_zero`
    (DDP needs every head in the graph)."""

    def __init__(self, loss: nn.Module, weights: list[float], keep_zero: bool = False):
        super().__init__()
        self.loss, self.weights, self.keep_zero = loss, list(weights), keep_zero

    def forward(self, outputs, targets) -> torch.Tensor:
        if not isinstance(outputs, (list, tuple)):
            outputs, targets = [outputs], [targets if not isinstance(targets, (list, tuple)) else targets[0]]
        total = 0
        for w, o, t in zip(self.weights, outputs, targets):
            if w == 0 and not self.keep_zero:
                continue
            total = total + w * self.loss(o, t)
        return total


def tp_fp_fn(pred_onehot: torch.Tensor, target_onehot: torch.Tensor, mask: torch.Tensor | None = None):
    """Per-class TP/FP/FN summed over batch and space (one-hot inputs, B×K×...)."""
    axes = [0] + list(range(2, pred_onehot.ndim))
    p, t = pred_onehot.float(), target_onehot.float()
    if mask is not None:
        p, t = p * mask, t * mask
    tp = (p * t).sum(axes)
    fp = (p * (1 - t)).sum(axes)
    fn = ((1 - p) * t).sum(axes)
    return tp, fp, fn
