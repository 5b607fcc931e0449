"""Distance-transform Hausdorff loss of Karimi & Salcudean (IEEE TMI 2019, eq. 8).

    L_HD-DT(q, p) = 1/|Ω| sum_{Ω} (p - q)^2 ∘ (d_p^alpha + d_q^alpha),    alpha = 2

q is the binary ground truth, p the predicted probability, d_q the unsigned distance to the boundary of
the ground truth and d_p the unsigned distance to the boundary of the thresholded prediction (both
targets, no gradient). Several foreground classes: the per-class means are summed (each class as its
own binary problem, as the SDM losses of :mod:`nnunet_sdm.losses.regression`).

Distances (``boundary_distance``): mm between voxel centres with the scale's spacing,
``|signed_distance|``, so voxels next to the surface are at ``min(spacing)`` on both sides (as
``edt(mask) + edt(~mask)`` of the reference implementations). A mask with no boundary in the patch
(empty, or filling it) gets distance 0 everywhere, as in Karimi's and SegLossOdyssey's code (the
distance map is left at zero when the mask has no foreground): the distance to a boundary outside the
patch is unknown, and the usual stand-in D (the patch diagonal) squared would weigh those voxels
100-1000 times more than voxels near real boundaries. Such voxels then cost only through the other
term, (p - q)^2 d^alpha of the other map, and through the Dice + CE the loss is combined with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_sdm.checks import check_positive, check_same_shape
from nnunet_sdm.distance import signed_distance_masks

KARIMI_ALPHA = 2.0


@torch.no_grad()
def boundary_distance(masks: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """Unsigned distance (mm) to the boundary of each mask, 0 for a mask without boundary.

    ``masks``: bool (B, K, *spatial) on any device; returns float32 of the same shape and device
    (computed on that device by ``signed_distance_masks``; no gradient).
    """
    return boundary_distance_of_sdm(signed_distance_masks(masks.bool(), spacing))


@torch.no_grad()
def boundary_distance_of_sdm(sdm: torch.Tensor) -> torch.Tensor:
    """``boundary_distance`` from SDMs already computed ((B, K, *spatial), negative inside): ``|sdm|``,
    and 0 for a channel without boundary (no sign change in the patch)."""
    flat = (sdm < 0).reshape(sdm.shape[0], sdm.shape[1], -1)
    has_boundary = flat.any(-1) & ~flat.all(-1)  # (B, K)
    view = has_boundary.view(*has_boundary.shape, *([1] * (sdm.ndim - 2)))
    distance = sdm.float().abs()
    return torch.where(view, distance, torch.zeros_like(distance))


class HausdorffDTLoss(nn.Module):
    """Eq. 8 of Karimi & Salcudean 2019, per-class means summed over classes.

    ``forward(probabilities, target, distance_pred, distance_target, mask=None)``: all (B, K, *spatial),
    K foreground classes -- softmax probabilities p, one-hot ground truth q, d_p and d_q (mm, >= 0;
    ``boundary_distance``); ``mask`` optional (B, 1, *spatial), non-zero = counted.
    """

    def __init__(self, alpha: float = KARIMI_ALPHA) -> None:
        super().__init__()
        self.alpha = check_positive("alpha", alpha)

    def forward(
        self,
        probabilities: torch.Tensor,
        target: torch.Tensor,
        distance_pred: torch.Tensor,
        distance_target: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for name, x in (
            ("target", target),
            ("distance_pred", distance_pred),
            ("distance_target", distance_target),
        ):
            check_same_shape(f"HausdorffDTLoss(probabilities, {name})", probabilities, x)
        weight = distance_pred.detach().float().pow(self.alpha) + distance_target.detach().float().pow(
            self.alpha
        )
        per_voxel = (probabilities.float() - target.detach().float()).square() * weight
        axes = (0, *range(2, per_voxel.ndim))
        if mask is None:
            return per_voxel.mean(axes).sum()
        if mask.ndim == per_voxel.ndim - 1:
            mask = mask[:, None]
        counted = (mask != 0).float().expand_as(per_voxel)
        return ((per_voxel * counted).sum(axes) / counted.sum(axes).clamp_min(1.0)).sum()
