"""Li et al.'s MapDice (eq. 2) and smooth L1 against small examples worked out by hand."""

import pytest
import torch

from nnunet_sdm.distance import ni_dm
from nnunet_sdm.losses.map_dice import MapDiceLoss, SmoothL1MapLoss

EPS = 1e-8


def t(*rows):
    """(1, C, n) tensor: one sample, one row of n voxel values per class."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(0)


def test_map_dice_one_class_by_hand():
    # p = [1, .5, 0, .5], phi = [1, .5, .25, 0]
    # sum p phi = 1 + .25 = 1.25; sum p = 2; sum phi = 1.75 -> score 2.5 / 3.75 = 2/3 -> loss 1/3
    loss = MapDiceLoss(smooth=EPS)(t([1.0, 0.5, 0.0, 0.5]), t([1.0, 0.5, 0.25, 0.0]))
    assert loss.item() == pytest.approx(1 / 3, abs=1e-6)


def test_map_dice_is_one_minus_the_sum_over_classes():
    # class 1 as above (2/3); class 2: p = phi = [0, 0, 1, 1] -> 2 * 2 / (2 + 2) = 1
    # eq. 2 literally: 1 - (2/3 + 1) = -2/3 (not sum_c (1 - score_c) = 1/3)
    probabilities = t([1.0, 0.5, 0.0, 0.5], [0.0, 0.0, 1.0, 1.0])
    phi = t([1.0, 0.5, 0.25, 0.0], [0.0, 0.0, 1.0, 1.0])
    assert MapDiceLoss(smooth=EPS)(probabilities, phi).item() == pytest.approx(-2 / 3, abs=1e-6)


def test_map_dice_per_sample_mean_and_batch_dice():
    probabilities = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # (2 samples, 1 class, 2 voxels)
    phi = torch.tensor([[[1.0, 0.0]], [[0.5, 0.0]]])
    # sample A: 2 * 1 / (1 + 1) = 1 -> 0; sample B: 2 * .5 / (2 + .5) = .4 -> .6; mean .3
    assert MapDiceLoss(smooth=EPS)(probabilities, phi).item() == pytest.approx(0.3, abs=1e-6)
    # pooled: sum p phi 1.5, sum p 3, sum phi 1.5 -> 3 / 4.5 = 2/3 -> 1/3
    pooled = MapDiceLoss(batch_dice=True, smooth=EPS)(probabilities, phi)
    assert pooled.item() == pytest.approx(1 / 3, abs=1e-6)


def test_map_dice_eps_for_absent_class():
    empty = t([0.0, 0.0, 0.0])
    # absent and not predicted: eps / eps = 1 -> loss 0; absent but predicted: eps / (1 + eps) ~ 0 -> loss ~ 1
    assert MapDiceLoss(smooth=1e-5)(empty, empty).item() == pytest.approx(0.0, abs=1e-6)
    assert MapDiceLoss(smooth=1e-5)(t([1.0, 0.0, 0.0]), empty).item() == pytest.approx(1.0, abs=1e-4)


def test_map_dice_prefers_high_penalty_voxels():
    # documented property of eq. 2: a voxel with phi below half the score lowers it when predicted
    phi = t([1.0, 1.0, 0.1])
    # all three: 2 * 2.1 / (3 + 2.1) = 0.8235; without the deep voxel: 2 * 2 / (2 + 2.1) = 0.9756
    loss_all = MapDiceLoss(smooth=EPS)(t([1.0, 1.0, 1.0]), phi).item()
    loss_rim = MapDiceLoss(smooth=EPS)(t([1.0, 1.0, 0.0]), phi).item()
    assert loss_all == pytest.approx(1 - 4.2 / 5.1, abs=1e-6)
    assert loss_rim == pytest.approx(1 - 4 / 4.1, abs=1e-6)
    assert loss_rim < loss_all


def _logits_and_ni_dm(labels: torch.Tensor, num_classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    logits = torch.randn(labels.shape[0], num_classes, *labels.shape[1:], requires_grad=True)
    phi = ni_dm(labels, (1.0, 1.0, 1.0), list(range(1, num_classes)))
    return logits, phi


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("case", ["absent", "full", "mixed"])
def test_map_dice_finite_values_and_gradients(case, batch_dice):
    labels = torch.zeros(2, 6, 7, 8, dtype=torch.long)
    if case == "full":
        labels[:] = 1  # class 1 fills the patch (NI-DM 1 everywhere), class 2 absent
    elif case == "mixed":
        labels[0, 1:4, 2:6, 2:6] = 1
        labels[1, 2:5, 1:3, 3:7] = 2
    logits, phi = _logits_and_ni_dm(labels)
    assert torch.isfinite(phi).all()
    loss = MapDiceLoss(batch_dice=batch_dice)(torch.softmax(logits, 1)[:, 1:], phi)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_map_dice_mask_excludes_ignore_label_voxels():
    ignore = 3
    labels = torch.zeros(1, 4, 6, 6, dtype=torch.long)
    labels[0, 1:3, 1:4, 1:4] = 1
    labels[0, :, :, 5] = ignore  # an ignore-label slab
    mask = (labels != ignore).unsqueeze(1).float()
    phi = ni_dm(torch.where(labels == ignore, 0, labels), (1.0, 1.0, 1.0), [1])
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 4, 6, 6, requires_grad=True)
    loss_fn = MapDiceLoss()
    loss = loss_fn(torch.softmax(logits, 1)[:, 1:], phi, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[..., 5].abs().max() == 0  # no gradient from ignored voxels
    assert logits.grad[..., :5].abs().sum() > 0
    # the same value as the loss on the labelled voxels alone, whatever is predicted where ignored
    cropped = loss_fn(torch.softmax(logits, 1)[:, 1:, ..., :5], phi[..., :5])
    assert loss.item() == pytest.approx(cropped.item(), abs=1e-6)
    other = logits.detach().clone()
    other[..., 5] = 50.0
    assert loss_fn(torch.softmax(other, 1)[:, 1:], phi, mask).item() == pytest.approx(loss.item(), abs=1e-6)


def test_smooth_l1_by_hand():
    # d = -1 (|d| = beta: linear, 1 - 0.5 = 0.5), 0.5 (0.5 * 0.25 = 0.125), 3 (3 - 0.5 = 2.5) -> mean 3.125 / 3
    loss = SmoothL1MapLoss(beta=1.0)(t([0.0, 0.5, 3.0]), t([1.0, 0.0, 0.0]))
    assert loss.item() == pytest.approx(3.125 / 3, abs=1e-6)


def test_smooth_l1_sums_classes_and_masks_voxels():
    prediction = t([0.5, 0.0], [0.0, 0.2])
    target = t([0.0, 0.0], [0.0, 0.0])
    # class 1: (0.125 + 0) / 2; class 2: (0 + 0.02) / 2 -> 0.0725
    assert SmoothL1MapLoss()(prediction, target).item() == pytest.approx(0.0725, abs=1e-6)
    mask = torch.tensor([[[0.0, 1.0]]])  # first voxel excluded: class 1 0, class 2 0.02
    assert SmoothL1MapLoss()(prediction, target, mask).item() == pytest.approx(0.02, abs=1e-6)


def test_argument_checks():
    with pytest.raises(ValueError, match="shapes differ"):
        MapDiceLoss()(t([1.0, 0.0]), t([1.0]))
    with pytest.raises(ValueError, match="smooth"):
        MapDiceLoss(smooth=0)
    with pytest.raises(ValueError, match="beta"):
        SmoothL1MapLoss(beta=-1.0)
