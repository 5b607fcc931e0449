"""Kervadec et al.'s boundary loss (with the constant kept) and the rebalancing schedule, by hand."""

import math

import pytest
import torch

from nnunet_sdm.distance import signed_distance
from nnunet_sdm.losses.boundary import BoundaryLoss, rebalance_alpha
from tests.losses._fills import label_fill


def row(values):
    """(1, 1, 1, n): one sample, one class, a 1 x n 2D image."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_hand_example_and_kervadec_gradient():
    phi = row([-2.0, -1.0, 1.0, 2.0])  # ground truth g = (1, 1, 0, 0)
    s = row([1.0, 0.5, 0.5, 0.0]).requires_grad_()
    loss = BoundaryLoss()(s, phi)
    # phi (s - g): -2*0, -1*(-0.5), 1*0.5, 2*0 = 0, 0.5, 0.5, 0 -> mean 0.25
    assert loss.item() == pytest.approx(0.25)
    # Kervadec's printed L_B = mean(phi s) = (-2 - 0.5 + 0.5 + 0) / 4 = -0.5; the dropped constant
    # mean(phi g) = -3/4; -0.5 - (-0.75) = 0.25: same loss up to a constant ...
    loss.backward()
    # ... so the same gradient: phi / N
    assert s.grad.flatten().tolist() == pytest.approx([-0.5, -0.25, 0.25, 0.5])


def test_minimum_zero_at_the_ground_truth():
    phi = row([-2.0, -1.0, 1.0, 2.0])
    assert BoundaryLoss()(row([1.0, 1.0, 0.0, 0.0]), phi).item() == 0.0
    assert BoundaryLoss()(row([0.0, 0.0, 1.0, 1.0]), phi).item() == pytest.approx((2 + 1 + 1 + 2) / 4)


def test_sum_over_classes_mean_over_voxels():
    # class 1: phi (-1, 1), s (0.5, 0.5) -> 0.5, 0.5; class 2: phi (1, -1), s (0, 0) -> 0, 1
    # per voxel sums 0.5, 1.5 -> mean 1.0
    phi = torch.tensor([[[[-1.0, 1.0]], [[1.0, -1.0]]]])
    s = torch.tensor([[[[0.5, 0.5]], [[0.0, 0.0]]]])
    assert BoundaryLoss()(s, phi).item() == pytest.approx(1.0)


def test_class_filling_the_patch_is_not_a_negative_reward():
    labels = torch.ones(1, 2, 2, dtype=torch.long)  # class 1 fills a 2 x 2 patch, spacing 1 mm
    phi = signed_distance(labels, (1.0, 1.0), [1])  # -D everywhere, D = sqrt(2^2 + 2^2)
    d = math.sqrt(8.0)
    assert torch.allclose(phi, torch.full_like(phi, -d))
    # s = 0.25 everywhere: D * mean(1 - s) = 0.75 D (Kervadec's value would be -0.25 D)
    assert BoundaryLoss()(torch.full_like(phi, 0.25), phi).item() == pytest.approx(0.75 * d, rel=1e-6)
    assert BoundaryLoss()(torch.ones_like(phi), phi).item() == 0.0
    # absent class: +D everywhere -> D * mean(s)
    phi_absent = signed_distance(torch.zeros_like(labels), (1.0, 1.0), [1])
    assert BoundaryLoss()(torch.full_like(phi, 0.25), phi_absent).item() == pytest.approx(0.25 * d, rel=1e-6)


def test_mask_excludes_voxels():
    phi = row([-2.0, -1.0, 1.0, 2.0])
    s = row([1.0, 0.5, 0.5, 0.0])
    mask = row([1.0, 0.0, 1.0, 1.0])
    # counted: 0, 0.5, 0 -> 0.5 / 3
    assert BoundaryLoss()(s, phi, mask).item() == pytest.approx(0.5 / 3)
    assert BoundaryLoss()(s, phi, torch.zeros_like(mask)).item() == 0.0


@pytest.mark.parametrize("fill", ["absent", "full", "mixed"])
def test_finite_values_and_gradients(fill):
    labels = label_fill(fill)
    phi = signed_distance(labels, (2.0, 1.0, 1.0), [1, 2])
    logits = (10 * torch.randn(2, 3, 6, 6, 6)).requires_grad_()
    for mask in (None, torch.rand(2, 1, 6, 6, 6) > 0.3):
        loss = BoundaryLoss()(torch.softmax(logits, 1)[:, 1:], phi, mask)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and loss >= 0
        assert torch.isfinite(grad).all()


def test_rebalancing_schedule():
    # alpha = 1 at epoch 0, -0.01 per epoch, floor 0.01
    assert rebalance_alpha(0) == 1.0
    assert rebalance_alpha(1) == pytest.approx(0.99)
    assert rebalance_alpha(50) == pytest.approx(0.5)
    assert rebalance_alpha(99) == pytest.approx(0.01)
    assert rebalance_alpha(1000) == 0.01
    assert rebalance_alpha(3, start=0.5, step=0.1, floor=0.3) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"start": 1.5}, "start"),
        ({"start": 0.0}, "start"),
        ({"step": -0.1}, "step"),
        ({"floor": 2.0}, "floor"),
        ({"floor": float("nan")}, "floor"),
    ],
)
def test_schedule_settings_checked(kwargs, name):
    with pytest.raises(ValueError, match=name):
        rebalance_alpha(0, **kwargs)
    with pytest.raises(ValueError, match="epoch"):
        rebalance_alpha(-1)
