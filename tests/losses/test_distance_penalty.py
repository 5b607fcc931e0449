"""Calivá et al. 2019, eq. 2: the distance-penalised cross-entropy against hand-worked examples."""

import math

import pytest
import torch
import torch.nn.functional as F

from nnunet_sdm.distance import caliva_penalty
from nnunet_sdm.losses.distance_penalty import DistancePenalisedCrossEntropy
from tests.losses._fills import label_fill

LN2 = math.log(2.0)


def two_voxels():
    """(1, 2 classes, 1, 2 voxels) logits, labels and Phi, a 2D "image" of 1 x 2 voxels."""
    # voxel 1: logits (0, 0) -> softmax (1/2, 1/2), label 0 -> CE = ln 2
    # voxel 2: logits (ln 3, 0) -> softmax (3/4, 1/4), label 1 -> CE = -ln(1/4) = 2 ln 2
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
    labels = torch.tensor([[[0, 1]]])
    phi = torch.tensor([[[[1.0, 0.5]]]])
    return logits, labels, phi


def test_weighting_changes_the_value_as_eq2_says():
    logits, labels, phi = two_voxels()
    loss = DistancePenalisedCrossEntropy()(logits, labels, phi)
    # (1 + 1) ln 2 + (1 + 0.5) 2 ln 2 = 5 ln 2 over N = 2 voxels -> 2.5 ln 2
    assert loss.item() == pytest.approx(2.5 * LN2, rel=1e-6)
    # the unweighted CE, (ln 2 + 2 ln 2) / 2 = 1.5 ln 2, is NOT what is returned (SegLossOdyssey's bug)
    unweighted = F.cross_entropy(logits, labels)
    assert unweighted.item() == pytest.approx(1.5 * LN2, rel=1e-6)
    assert abs(loss.item() - unweighted.item()) > 0.5


def test_zero_penalty_is_plain_cross_entropy():
    logits, labels, phi = two_voxels()
    loss = DistancePenalisedCrossEntropy()(logits, labels, torch.zeros_like(phi))
    assert loss.item() == pytest.approx(1.5 * LN2, rel=1e-6)


def test_label_and_penalty_layouts_with_or_without_channel_axis():
    logits, labels, phi = two_voxels()
    a = DistancePenalisedCrossEntropy()(logits, labels[:, None], phi)
    b = DistancePenalisedCrossEntropy()(logits, labels, phi[:, 0])
    assert a.item() == pytest.approx(b.item())


def test_gradient_is_weighted_softmax_minus_onehot():
    logits, labels, phi = two_voxels()
    logits.requires_grad_()
    DistancePenalisedCrossEntropy()(logits, labels, phi).backward()
    # dL/dz = (1 + Phi) (softmax - onehot) / N
    # voxel 1: 2 * ((1/2, 1/2) - (1, 0)) / 2 = (-1/2, 1/2)
    # voxel 2: 1.5 * ((3/4, 1/4) - (0, 1)) / 2 = (0.5625, -0.5625)
    expected = torch.tensor([[[[-0.5, 0.5625]], [[0.5, -0.5625]]]])
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_mask_excludes_voxels_even_with_an_out_of_range_label():
    logits, labels, phi = two_voxels()
    labels = torch.tensor([[[0, 255]]])  # voxel 2 carries an ignore label
    mask = torch.tensor([[[[1, 0]]]])
    logits.requires_grad_()
    loss = DistancePenalisedCrossEntropy()(logits, labels, phi, mask)
    # only voxel 1 counts: (1 + 1) ln 2 / 1
    assert loss.item() == pytest.approx(2 * LN2, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[..., 1] == 0)
    # nothing counted -> 0, finite
    none = DistancePenalisedCrossEntropy()(logits, labels, phi, torch.zeros_like(mask))
    assert none.item() == 0.0


def test_with_calivas_penalty_map():
    # labels along one row, spacing 1 mm: 0 0 1 1 1
    # outside part: distances to the class 2, 1 -> reverted (M - D) / (M - m) = 0, 1
    # inside part: distances to the nearest non-class voxel 1, 2, 3 -> (3 - D) / 2 = 1, 0.5, 0
    labels = torch.tensor([[[0, 0, 1, 1, 1]]])
    phi = caliva_penalty(labels, (1.0, 1.0), [1])
    assert phi.shape == (1, 1, 1, 5)
    assert phi.flatten().tolist() == pytest.approx([0.0, 1.0, 1.0, 0.5, 0.0])
    # zero logits: CE = ln 2 everywhere -> ln 2 * mean(1 + Phi) = ln 2 * 7.5 / 5
    loss = DistancePenalisedCrossEntropy()(torch.zeros(1, 2, 1, 5), labels, phi)
    assert loss.item() == pytest.approx(1.5 * LN2, rel=1e-6)


@pytest.mark.parametrize("fill", ["absent", "full", "mixed"])
def test_finite_values_and_gradients(fill):
    labels = label_fill(fill)
    phi = caliva_penalty(labels, (2.0, 1.0, 1.0), [1, 2])
    assert torch.isfinite(phi).all() and phi.min() >= 0 and phi.max() <= 1
    logits = (10 * torch.randn(2, 3, 6, 6, 6)).requires_grad_()
    mask = torch.rand(2, 1, 6, 6, 6) > 0.3
    for m in (None, mask):
        loss = DistancePenalisedCrossEntropy()(logits, labels, phi, m)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and loss > 0
        assert torch.isfinite(grad).all()


def test_shape_errors_are_named():
    logits, labels, phi = two_voxels()
    with pytest.raises(ValueError, match="penalty"):
        DistancePenalisedCrossEntropy()(logits, labels, torch.zeros(1, 2, 1, 2))
    with pytest.raises(ValueError, match="labels"):
        DistancePenalisedCrossEntropy()(logits, labels.float(), phi)
