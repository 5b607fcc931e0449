"""Xue et al. 2020 losses against small examples worked out by hand."""

import math

import pytest
import torch

from nnunet_sdm.losses import (
    L1SDMLoss,
    L2SDMLoss,
    ProductSDMLoss,
    ShapeAwareSDMLoss,
    SoftDiceLoss,
    deep_supervision_weights,
    heaviside,
)


def t(values):
    """(1, 1, n) tensor: one sample, one class, n voxels."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1)


def test_product_loss_per_voxel_ratio():
    # voxel 1: p = y = 0.5 -> yp / (yp + p^2 + y^2) = 0.25 / 0.75 = 1/3 -> term -1/3
    # voxel 2: p = -0.5, y = 0.5 -> -0.25 / (-0.25 + 0.25 + 0.25) = -1 -> term +1
    loss = ProductSDMLoss(eps=1e-12)(t([0.5, -0.5]), t([0.5, 0.5]))
    assert loss.item() == pytest.approx((-1 / 3 + 1) / 2, abs=1e-6)


def test_product_loss_is_scale_invariant_per_voxel():
    # the ratio depends on p / y only: (0.02, 0.01) -> 0.0002 / (0.0002 + 0.0004 + 0.0001) = 2/7, like (0.2, 0.1)
    small = ProductSDMLoss(eps=1e-12)(t([0.02]), t([0.01]))
    large = ProductSDMLoss(eps=1e-12)(t([0.2]), t([0.1]))
    assert small.item() == pytest.approx(-2 / 7, abs=1e-5)
    assert small.item() == pytest.approx(large.item(), abs=1e-5)


def test_l1_l2_sum_classes_mean_voxels():
    pred = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])  # (1, 2 classes, 2 voxels)
    target = torch.tensor([[[1.0, 1.0], [0.0, -0.5]]])
    # class 0: |0-1|, |1-1| -> mean 0.5; class 1: 0.5, 1.0 -> mean 0.75; sum 1.25
    assert L1SDMLoss()(pred, target).item() == pytest.approx(1.25)
    # squares: class 0 mean 0.5; class 1: 0.25, 1.0 -> 0.625; sum 1.125
    assert L2SDMLoss()(pred, target).item() == pytest.approx(1.125)


def test_mask_excludes_voxels():
    pred, target = t([0.0, 1.0]), t([1.0, 1.0])
    mask = t([0.0, 1.0])
    assert L1SDMLoss()(pred, target, mask).item() == pytest.approx(0.0)


def test_soft_dice_hand_example():
    # intersect 1, sum p 2, sum y 2 -> Dice (2 + e) / (4 + e) ~ 0.5 -> loss 0.5
    loss = SoftDiceLoss(smooth=1e-8)(t([1.0, 0.0, 0.5, 0.5]), t([1.0, 1.0, 0.0, 0.0]))
    assert loss.item() == pytest.approx(0.5, abs=1e-6)


def test_soft_dice_sums_over_classes_and_averages_samples():
    probs = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]])  # (2, 2, 2)
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]])
    # sample 0: class 0 perfect (0), class 1 both empty (0) -> 0
    # sample 1: class 0 Dice 2*1/(1+2) = 2/3 -> 1/3; class 1 perfect -> 0
    loss = SoftDiceLoss(smooth=1e-8)(probs, target)
    assert loss.item() == pytest.approx((0 + 1 / 3) / 2, abs=1e-6)
    # batch Dice pools sums: class 0: I 2, P 3, Y 2 -> 1 - 4/5; class 1: I 1, P 1, Y 1 -> 0
    assert SoftDiceLoss(batch_dice=True, smooth=1e-8)(probs, target).item() == pytest.approx(0.2, abs=1e-6)


def test_heaviside_is_one_inside():
    values = heaviside(torch.tensor([-0.01, 0.0, 0.01]), k=1500)
    expected = [1 / (1 + math.exp(-15)), 0.5, 1 / (1 + math.exp(15))]
    assert values.tolist() == pytest.approx(expected, rel=1e-6)


def test_shape_aware_loss_combines_eq5():
    pred, target_sdm, onehot = t([-0.5, 0.5]), t([-0.5, -0.5]), t([1.0, 1.0])
    terms = ShapeAwareSDMLoss(k=1500, sdm_weight=10)(pred, target_sdm, onehot)
    # l1: (0 + 1) / 2 = 0.5; product: voxel 1 -1/3, voxel 2: -(-0.25)/(-0.25+0.25+0.25) = 1 -> mean 1/3
    # dice: H = (~1, ~0) -> I 1, P 1, Y 2 -> 1 - 2/3 = 1/3
    assert terms["l1"].item() == pytest.approx(0.5)
    assert terms["product"].item() == pytest.approx(1 / 3, abs=1e-5)
    assert terms["dice"].item() == pytest.approx(1 / 3, abs=1e-5)
    assert terms["loss"].item() == pytest.approx(1 / 3 + 10 * (0.5 + 1 / 3), abs=1e-4)


def test_ablation_switches():
    pred, target, onehot = t([-0.5]), t([-0.5]), t([1.0])
    assert set(ShapeAwareSDMLoss(dice_weight=0)(pred, target, onehot)) == {"loss", "l1", "product"}
    assert set(ShapeAwareSDMLoss(product_weight=0)(pred, target, onehot)) == {"loss", "dice", "l1"}


@pytest.mark.parametrize(
    "kwargs", [{"k": 0}, {"k": -1}, {"sdm_weight": -1}, {"dice_weight": float("nan")}, {"smooth": 0}]
)
def test_arguments_checked_up_front(kwargs):
    with pytest.raises(ValueError):
        ShapeAwareSDMLoss(**kwargs)


def test_all_terms_off_is_an_error():
    with pytest.raises(ValueError, match="switched off"):
        ShapeAwareSDMLoss(dice_weight=0, sdm_weight=0)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="shapes differ"):
        L1SDMLoss()(torch.zeros(1, 2, 3), torch.zeros(1, 1, 3))


@pytest.mark.parametrize("fill", ["absent", "full"])
def test_finite_with_absent_and_full_classes(fill):
    torch.manual_seed(0)
    pred = torch.randn(2, 2, 6, 6, 6).tanh().requires_grad_()
    sign = 1.0 if fill == "absent" else -1.0
    target = torch.full((2, 2, 6, 6, 6), sign)
    onehot = (target < 0).float()
    terms = ShapeAwareSDMLoss()(pred, target, onehot)
    terms["loss"].backward()
    assert all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(pred.grad).all()


def test_finite_at_zero_prediction_and_target():
    pred = torch.zeros(1, 1, 4, requires_grad=True)
    loss = ProductSDMLoss()(pred, torch.zeros(1, 1, 4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_deep_supervision_weights_match_nnunet():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    w = deep_supervision_weights(4, last_weight=1e-6)
    assert sum(w) == pytest.approx(1.0) and w[-1] > 0
