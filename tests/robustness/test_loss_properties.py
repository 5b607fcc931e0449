"""Property tests: every loss of ``nnunet_sdm.losses`` gives finite values AND finite gradients.

Random 2D/3D patches (1-7 voxels per 3D axis), 1-3 foreground classes, spacings incl. 5 x 0.7 x 0.7 mm,
empty / full / single-voxel / noisy / blocky label maps, extreme network outputs (logits +-1e4, SDMs of
exactly 0 and +-1), ignore-label style masks (random, none counted, all counted), with and without
``torch.autocast("cpu", dtype=torch.bfloat16)`` (the prediction then reaches the loss in bfloat16).
Targets are made as the trainers make them (``signed_distance`` + ``normalise_xue``/``truncate``,
``ni_dm``, ``caliva_penalty``, ``boundary_distance``). Each term's gradient w.r.t. the network output is
taken separately, so a NaN in one term cannot hide behind another.

Each loss has one ``check_*`` function, run twice: on hypothesis' random cases, and on a fixed grid of
the extremes (every extreme prediction x empty / full / single-voxel labels x fp32 / bf16 autocast, on a
5 x 0.7 x 0.7 mm 3D patch), so the extremes are covered whatever hypothesis draws.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunet_sdm.distance import caliva_penalty, ni_dm, normalise_xue, signed_distance, truncate
from nnunet_sdm.losses import (
    L1SDMLoss,
    L2SDMLoss,
    ProductSDMLoss,
    ShapeAwareSDMLoss,
    SoftDiceLoss,
    heaviside,
)
from nnunet_sdm.losses.boundary import BoundaryLoss
from nnunet_sdm.losses.distance_penalty import DistancePenalisedCrossEntropy
from nnunet_sdm.losses.hausdorff import HausdorffDTLoss, boundary_distance
from nnunet_sdm.losses.map_dice import MapDiceLoss, SmoothL1MapLoss
from tests.robustness.strategies import MASK_KINDS, PREDICTION_KINDS, Case, cases, make_labels

SETTINGS = settings(max_examples=30, deadline=None, database=None)
#: values that are a few float32/bfloat16 rounding steps outside a documented range still pass
SLACK = 1e-3


def autocast(case: Case):
    return torch.autocast("cpu", dtype=torch.bfloat16) if case.bf16 else contextlib.nullcontext()


def assert_finite_with_finite_gradients(terms: dict[str, torch.Tensor], leaf: torch.Tensor, case: Case):
    """Every term is a finite scalar and its gradient w.r.t. ``leaf`` (the network output) is finite."""
    assert terms, "no loss term"
    for name, value in terms.items():
        assert value.ndim == 0, f"{name}: not a scalar, shape {tuple(value.shape)}"
        assert torch.isfinite(value), f"{name} = {value.item()} for {case}"
        if not value.requires_grad:
            continue
        (gradient,) = torch.autograd.grad(value, leaf, retain_graph=True, allow_unused=True)
        if gradient is not None:
            assert torch.isfinite(gradient).all(), f"gradient of {name} not finite for {case}"


def xue_target(case: Case, tau: float | None) -> torch.Tensor:
    sdm = signed_distance(case.labels, case.spacing, case.classes)
    return normalise_xue(sdm, case.spatial_dims) if tau is None else truncate(sdm, tau)


def foreground_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """As the trainers: softmax over background + classes, foreground channels."""
    return torch.softmax(logits.float(), 1)[:, 1:]


# ---- the checks, one per loss ------------------------------------------------------------------------------
def check_shape_aware(case, k=1500.0, weights=(1.0, 10.0, 1.0, 1.0), batch_dice=False, tau=None):
    """Xue et al. eq. 5 (ShapeAwareSDMLoss) and its terms dice / l1 / product."""
    dice_weight, sdm_weight, l1_weight, product_weight = weights
    loss = ShapeAwareSDMLoss(k, sdm_weight, dice_weight, l1_weight, product_weight, batch_dice=batch_dice)
    pred = case.prediction(case.num_classes)
    with autocast(case):
        terms = loss(case.network_dtype(pred), xue_target(case, tau), case.onehot)
    assert_finite_with_finite_gradients(terms, pred, case)
    assert "loss" in terms
    if "dice" in terms:
        assert -SLACK <= terms["dice"].item() <= case.num_classes + SLACK
    if "product" in terms:  # per class -ratio, ratio in [-1, 1/3]
        assert -case.num_classes / 3 - SLACK <= terms["product"].item() <= case.num_classes + SLACK


def check_heaviside(case, k=1500.0):
    pred = case.prediction(case.num_classes)
    with autocast(case):
        h = heaviside(case.network_dtype(pred), k)
    assert h.dtype == torch.float32 and ((h >= 0) & (h <= 1)).all()
    assert_finite_with_finite_gradients({"heaviside_sum": h.sum()}, pred, case)


def check_soft_dice(case, batch_dice=False, source="heaviside"):
    raw = case.prediction(case.num_classes if source == "heaviside" else case.num_classes + 1)
    with autocast(case):
        out = case.network_dtype(raw)
        p = heaviside(out) if source == "heaviside" else foreground_probabilities(out)
        value = SoftDiceLoss(batch_dice=batch_dice)(p, case.onehot, case.mask())
    assert_finite_with_finite_gradients({"dice": value}, raw, case)
    assert -SLACK <= value.item() <= case.num_classes + SLACK


def check_regression(case, name="product", tau=None):
    loss = {"l1": L1SDMLoss(), "l2": L2SDMLoss(), "product": ProductSDMLoss()}[name]
    pred = case.prediction(case.num_classes)
    with autocast(case):
        value = loss(case.network_dtype(pred), xue_target(case, tau), case.mask())
    assert_finite_with_finite_gradients({name: value}, pred, case)
    if name != "product":
        assert value.item() >= 0


def check_penalised_ce(case):
    logits = case.prediction(case.num_classes + 1)
    penalty = caliva_penalty(case.labels, case.spacing, case.classes)
    labels, mask = case.labels, case.mask()
    if mask is not None:  # the ignore label: an out-of-range value where the mask excludes the voxel
        labels = torch.where(mask[:, 0] != 0, labels, torch.full_like(labels, 255))
    with autocast(case):
        value = DistancePenalisedCrossEntropy()(case.network_dtype(logits), labels, penalty, mask)
    assert_finite_with_finite_gradients({"penalised_ce": value}, logits, case)
    assert value.item() >= 0


def check_boundary(case):
    logits = case.prediction(case.num_classes + 1)
    phi = signed_distance(case.labels, case.spacing, case.classes)  # raw mm, as nnUNetTrainerBoundary
    with autocast(case):
        value = BoundaryLoss()(foreground_probabilities(case.network_dtype(logits)), phi, case.mask())
    assert_finite_with_finite_gradients({"boundary": value}, logits, case)
    assert value.item() >= -SLACK  # the module keeps Kervadec's constant: >= 0


def check_hausdorff(case, alpha=2.0):
    logits = case.prediction(case.num_classes + 1)
    with autocast(case):
        out = case.network_dtype(logits)
        predicted = out.argmax(1)
        d_pred = boundary_distance(torch.stack([predicted == c for c in case.classes], 1), case.spacing)
        d_target = boundary_distance(case.onehot.bool(), case.spacing)
        p = foreground_probabilities(out)
        value = HausdorffDTLoss(alpha)(p, case.onehot, d_pred, d_target, case.mask())
    assert_finite_with_finite_gradients({"hd": value}, logits, case)
    assert value.item() >= 0


def check_map_dice(case, batch_dice=False, smooth=1e-5):
    logits = case.prediction(case.num_classes + 1)
    phi = ni_dm(case.labels, case.spacing, case.classes)
    with autocast(case):
        p = foreground_probabilities(case.network_dtype(logits))
        value = MapDiceLoss(batch_dice=batch_dice, smooth=smooth)(p, phi, case.mask())
    assert_finite_with_finite_gradients({"map_dice": value}, logits, case)
    assert 1 - case.num_classes - SLACK <= value.item() <= 1 + SLACK


def check_smooth_l1_map(case, beta=1.0):
    pred = case.prediction(case.num_classes)
    phi = ni_dm(case.labels, case.spacing, case.classes)
    with autocast(case):
        value = SmoothL1MapLoss(beta)(torch.relu(case.network_dtype(pred)), phi, case.mask())
    assert_finite_with_finite_gradients({"smooth_l1": value}, pred, case)
    assert value.item() >= 0


CHECKS = {
    "ShapeAwareSDMLoss": check_shape_aware,
    "heaviside": check_heaviside,
    "SoftDiceLoss": check_soft_dice,
    "L1SDMLoss": lambda case: check_regression(case, "l1"),
    "L2SDMLoss": lambda case: check_regression(case, "l2"),
    "ProductSDMLoss": lambda case: check_regression(case, "product"),
    "DistancePenalisedCrossEntropy": check_penalised_ce,
    "BoundaryLoss": check_boundary,
    "HausdorffDTLoss": check_hausdorff,
    "MapDiceLoss": check_map_dice,
    "SmoothL1MapLoss": check_smooth_l1_map,
}


# ---- random cases (hypothesis) -------------------------------------------------------------------------------
@SETTINGS
@given(
    cases(),
    st.sampled_from([1500.0, 1.0, 1e6]),
    st.sampled_from(
        [(1.0, 10.0, 1.0, 1.0), (0.0, 10.0, 1.0, 1.0), (1.0, 10.0, 1.0, 0.0), (2.0, 0.5, 3.0, 0.1)]
    ),
    st.booleans(),
    st.sampled_from([None, 10.0, 0.5]),
)
def test_shape_aware_sdm_loss_and_its_terms(case, k, weights, batch_dice, tau):
    check_shape_aware(case, k, weights, batch_dice, tau)


@SETTINGS
@given(cases(), st.sampled_from([1500.0, 1.0, 1e6]))
def test_heaviside_is_a_probability_with_finite_gradient(case, k):
    check_heaviside(case, k)


@SETTINGS
@given(cases(), st.booleans(), st.sampled_from(["heaviside", "softmax"]))
def test_soft_dice_loss(case, batch_dice, source):
    check_soft_dice(case, batch_dice, source)


@SETTINGS
@given(cases(), st.sampled_from(["l1", "l2", "product"]), st.sampled_from([None, 10.0]))
def test_sdm_regression_losses(case, name, tau):
    check_regression(case, name, tau)


@SETTINGS
@given(cases())
def test_distance_penalised_cross_entropy(case):
    check_penalised_ce(case)


@SETTINGS
@given(cases())
def test_boundary_loss(case):
    check_boundary(case)


@SETTINGS
@given(cases(), st.sampled_from([2.0, 1.0, 0.5, 3.0]))
def test_hausdorff_dt_loss(case, alpha):
    check_hausdorff(case, alpha)


@SETTINGS
@given(cases(), st.booleans(), st.sampled_from([1e-5, 1.0]))
def test_map_dice_loss(case, batch_dice, smooth):
    check_map_dice(case, batch_dice, smooth)


@SETTINGS
@given(cases(), st.sampled_from([1.0, 0.1, 1e-3]))
def test_smooth_l1_map_loss(case, beta):
    check_smooth_l1_map(case, beta)


# ---- the extremes, every one (deterministic grid) ----------------------------------------------------------
EXTREME_PREDICTIONS = [k for k in PREDICTION_KINDS if k != "normal"]
EXTREME_LABELS = ["empty", "full", "single_voxel"]


@pytest.mark.parametrize("loss", sorted(CHECKS))
def test_every_loss_on_every_extreme(loss):
    rng = np.random.default_rng(0)
    grid = itertools.product(EXTREME_PREDICTIONS, EXTREME_LABELS, [False, True], [1, 2])
    for i, (prediction, label_kind, bf16, num_classes) in enumerate(grid):
        labels = make_labels((2, 5, 6, 4), num_classes, label_kind, rng)
        case = Case(
            labels=torch.from_numpy(labels),
            num_classes=num_classes,
            spacing=(5.0, 0.7, 0.7),
            label_kind=label_kind,
            prediction_kind=prediction,
            mask_kind=MASK_KINDS[i % len(MASK_KINDS)],
            bf16=bf16,
            seed=i,
        )
        CHECKS[loss](case)


# ---- argument checks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: ShapeAwareSDMLoss(k=0.0),
        lambda: ShapeAwareSDMLoss(sdm_weight=-1.0),
        lambda: ShapeAwareSDMLoss(dice_weight=0.0, sdm_weight=0.0),
        lambda: ShapeAwareSDMLoss(k=float("nan")),
        lambda: SoftDiceLoss(smooth=0.0),
        lambda: ProductSDMLoss(eps=-1.0),
        lambda: HausdorffDTLoss(alpha=0.0),
        lambda: MapDiceLoss(smooth=float("inf")),
        lambda: SmoothL1MapLoss(beta=0.0),
        lambda: heaviside(torch.zeros(1), k=-1.0),
    ],
)
def test_nonsense_loss_arguments_raise_value_error(make):
    with pytest.raises(ValueError, match="must be a finite number|switched off"):
        make()


@pytest.mark.parametrize(
    "call",
    [
        lambda: L1SDMLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4)),
        lambda: SoftDiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5)),
        lambda: BoundaryLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4)),
        lambda: MapDiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4)),
        lambda: HausdorffDTLoss()(*(torch.zeros(1, 2, 4, 4),) * 3, torch.zeros(1, 2, 4, 3)),
        lambda: DistancePenalisedCrossEntropy()(
            torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long), torch.zeros(1, 4, 4)
        ),
    ],
)
def test_mismatched_shapes_raise_value_error_with_both_shapes(call):
    with pytest.raises(ValueError, match=r"shape"):
        call()
