"""Karimi & Salcudean's distance-transform Hausdorff loss and its boundary distances, by hand."""

import pytest
import torch

from nnunet_sdm.losses.hausdorff import HausdorffDTLoss, boundary_distance
from tests.losses._fills import label_fill


def row(values, dtype=torch.float32):
    """(1, 1, 1, n): one sample, one class, a 1 x n 2D image."""
    return torch.tensor(values, dtype=dtype).view(1, 1, 1, -1)


def test_hand_example():
    p, q = row([0.5, 0.5, 0.2]), row([1.0, 0.0, 0.0])
    dp, dq = row([1.0, 2.0, 1.0]), row([2.0, 1.0, 3.0])
    # (p - q)^2 (dp^2 + dq^2): 0.25 * 5 = 1.25, 0.25 * 5 = 1.25, 0.04 * 10 = 0.4 -> mean 2.9 / 3
    assert HausdorffDTLoss()(p, q, dp, dq).item() == pytest.approx(2.9 / 3, rel=1e-6)
    # alpha = 1: 0.25 * 3, 0.25 * 3, 0.04 * 4 -> (0.75 + 0.75 + 0.16) / 3
    assert HausdorffDTLoss(alpha=1)(p, q, dp, dq).item() == pytest.approx(1.66 / 3, rel=1e-6)


def test_gradient():
    p = row([0.5, 0.5, 0.2]).requires_grad_()
    q, dp, dq = row([1.0, 0.0, 0.0]), row([1.0, 2.0, 1.0]), row([2.0, 1.0, 3.0])
    HausdorffDTLoss()(p, q, dp, dq).backward()
    # 2 (p - q)(dp^2 + dq^2) / 3: 2(-0.5)5/3, 2(0.5)5/3, 2(0.2)10/3
    assert p.grad.flatten().tolist() == pytest.approx([-5 / 3, 5 / 3, 4 / 3], rel=1e-6)


def test_classes_summed_and_mask():
    # class 1 as in test_hand_example (2.9 / 3); class 2: p = q -> 0; sum 2.9 / 3
    p = torch.cat([row([0.5, 0.5, 0.2]), row([0.0, 1.0, 0.0])], 1)
    q = torch.cat([row([1.0, 0.0, 0.0]), row([0.0, 1.0, 0.0])], 1)
    dp = torch.cat([row([1.0, 2.0, 1.0])] * 2, 1)
    dq = torch.cat([row([2.0, 1.0, 3.0])] * 2, 1)
    assert HausdorffDTLoss()(p, q, dp, dq).item() == pytest.approx(2.9 / 3, rel=1e-6)
    # mask out voxel 3: class 1 (1.25 + 1.25) / 2
    mask = row([1.0, 1.0, 0.0])
    assert HausdorffDTLoss()(p, q, dp, dq, mask).item() == pytest.approx(1.25, rel=1e-6)
    assert HausdorffDTLoss()(p, q, dp, dq, torch.zeros_like(mask)).item() == 0.0


def test_boundary_distance_by_hand():
    # mask 0 1 1 0 0 along an axis of spacing 2 mm: |sdm| = 2, 2, 2, 2, 4 (voxel-centre distances)
    masks = row([0, 1, 1, 0, 0], dtype=torch.bool)
    assert boundary_distance(masks, (1.0, 2.0)).flatten().tolist() == pytest.approx([2, 2, 2, 2, 4])
    # no boundary in the patch (empty or full mask): 0 everywhere
    assert boundary_distance(torch.zeros_like(masks), (1.0, 2.0)).abs().max() == 0
    assert boundary_distance(torch.ones_like(masks), (1.0, 2.0)).abs().max() == 0


@pytest.mark.parametrize("fill", ["absent", "full", "mixed"])
def test_finite_values_and_gradients(fill):
    labels = label_fill(fill)
    onehot = torch.stack([labels == c for c in (1, 2)], 1)
    dq = boundary_distance(onehot, (2.0, 1.0, 1.0))
    logits = (10 * torch.randn(2, 3, 6, 6, 6)).requires_grad_()
    predicted = logits.detach().argmax(1)
    dp = boundary_distance(torch.stack([predicted == c for c in (1, 2)], 1), (2.0, 1.0, 1.0))
    for mask in (None, torch.rand(2, 1, 6, 6, 6) > 0.3):
        loss = HausdorffDTLoss()(torch.softmax(logits, 1)[:, 1:], onehot.float(), dp, dq, mask)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and loss >= 0
        assert torch.isfinite(grad).all()


def test_alpha_checked():
    with pytest.raises(ValueError, match="alpha"):
        HausdorffDTLoss(alpha=0)
