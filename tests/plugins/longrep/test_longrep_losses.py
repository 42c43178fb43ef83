"""LongRep losses: the method's correctness properties (bounds, stop-gradient, regulariser values)."""
from __future__ import annotations

import pytest
import torch

from longnet_longrep.losses import (consistency_loss, covariance_loss, negative_cosine, orthogonality_loss,
                                    symmetric_similarity, variance_loss)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread, restored after


def test_negative_cosine_bounds_and_parallel():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)
    d = negative_cosine(p, z)
    assert -1.0 <= float(d) <= 1.0
    assert float(negative_cosine(p, 3.0 * p)) == pytest.approx(-1.0, abs=1e-6)
    assert float(negative_cosine(p, -p)) == pytest.approx(1.0, abs=1e-6)
    for _ in range(20):  # bounds hold for any input
        a, b = torch.randn(8, 5, generator=g) * 10, torch.randn(8, 5, generator=g)
        assert -1.0 - 1e-6 <= float(negative_cosine(a, b)) <= 1.0 + 1e-6


def test_similarity_of_identical_inputs_with_identity_predictor_is_minus_one():
    z = torch.randn(32, 8)
    identity = torch.nn.Identity()
    assert float(symmetric_similarity(identity(z), z, identity(z), z.clone())) == pytest.approx(-1.0, abs=1e-6)


def test_stop_gradient_no_gradient_reaches_z_branch():
    z_branch = torch.randn(16, 8, requires_grad=True)
    p_branch = torch.randn(16, 8, requires_grad=True)
    z = z_branch * 2.0
    negative_cosine(p_branch * 1.0, z).backward()
    assert z_branch.grad is None
    assert p_branch.grad is not None and p_branch.grad.abs().sum() > 0
    # symmetric form: each visit's z only reaches the loss through the other visit's prediction
    za = torch.randn(16, 8, requires_grad=True)
    zb = torch.randn(16, 8, requires_grad=True)
    pa, pb = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True)
    symmetric_similarity(pa, za, pb, zb).backward()
    assert za.grad is None and zb.grad is None and pa.grad is not None and pb.grad is not None


def test_variance_loss_zero_for_large_std_and_099_for_constant():
    z = torch.randn(4096, 16) * 3.0
    assert float(variance_loss(z)) == pytest.approx(0.0, abs=1e-6)
    assert float(variance_loss(torch.full((128, 16), 0.7))) == pytest.approx(0.99, abs=1e-6)


def test_covariance_loss_zero_for_whitened_z():
    n, w = 256, 8
    x = torch.randn(n, w, dtype=torch.float64)
    x = x - x.mean(0)
    # whiten exactly: C = xᵀx/(n−1) = I
    cov = x.T @ x / (n - 1)
    evals, evecs = torch.linalg.eigh(cov)
    white = x @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    assert float(covariance_loss(white)) == pytest.approx(0.0, abs=1e-10)
    correlated = torch.randn(n, 1).repeat(1, w)
    assert float(covariance_loss(correlated)) > 1.0


def test_orthogonality_loss_zero_for_orthogonal_one_for_parallel():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    b = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, -1.0]])
    assert float(orthogonality_loss(a, b)) == pytest.approx(0.0, abs=1e-7)
    assert float(orthogonality_loss(a, 4 * a)) == pytest.approx(1.0, abs=1e-6)
    assert float(orthogonality_loss(a, -a)) == pytest.approx(1.0, abs=1e-6)


def test_consistency_loss_zero_for_identical_confident_predictions():
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    onehot = torch.zeros(2, 3, 8, 8, 8).scatter_(1, labels, 1.0)
    logits = onehot * 40.0 - 20.0  # softmax ≈ one-hot
    assert float(consistency_loss(logits, logits.clone())) == pytest.approx(0.0, abs=1e-4)
    other = torch.roll(logits, 3, dims=2)
    assert float(consistency_loss(logits, other)) > 0.3


def test_consistency_loss_uses_pseudo_labels_without_gradient_to_them():
    a = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    b = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    consistency_loss(a, b).backward()
    assert a.grad is not None and b.grad is not None  # each side gets gradient as the prediction
