"""Losses of Li et al. (distance-map regression with LR-Net): MapDice (eq. 2) and the smooth L1 regression loss.

MapDice, eq. 2, with the ground-truth NI-DM ``phi`` (eq. 1) as a voxel-wise penalty map::

    L_MapDice = 1 - sum_{c=1}^{C} (2 * sum_x p_c(x) phi_c(x) + eps) / (sum_x p_c(x) + sum_x phi_c(x) + eps)

``p_c`` is the predicted probability (softmax) of foreground class ``c`` and ``phi_c`` the NI-DM of
class ``c`` (in [0, 1], 0 outside the class, 1 on its boundary, lowest at the deepest voxel of each
connected component). The products and the terms of the denominator are summed over the voxels, as
in the soft Dice loss that eq. 2 modifies (the printed equation omits the sums).

Taken exactly as printed: ``1 - sum_c`` (not ``sum_c (1 - MapDice_c)``). For one foreground class
(the paper's tumour) the two agree; with C classes they differ by the constant C - 1 only, so the
gradients are the same, but the logged value lies in [1 - C, 1] and is negative once more than one
class is matched well. ``eps`` sits once in the numerator (not doubled) as printed: a class absent
from the target and the prediction scores 1, a class absent from the target but predicted ~0.

A property of eq. 2 worth knowing: with a non-binary ``phi``, raising ``p`` at a voxel raises the
score only where ``phi`` exceeds half the current score (the score is linear-fractional in ``p``), so
the optimum is ``p = 1`` on the voxels with high ``phi`` and ``p = 0`` elsewhere: the loss rewards the
boundary zone and pushes the deep interior of large components (NI-DM ``offset / M``, low) towards
background. The paper targets small tumours, where every voxel is near the boundary.

Smooth L1 (section 2.3, the LR-Net's regression loss, Girshick's definition with ``beta``)::

    l(d) = 0.5 d^2 / beta    if |d| < beta,     |d| - 0.5 beta    otherwise,     d = prediction - phi

averaged over batch and voxels per class and summed over classes (as the repository's other
regression losses). NI-DM targets lie in [0, 1], so with ``beta = 1`` the loss is quadratic wherever
the LR-Net's output stays within 1 of its target.

Pure torch; inputs have shape (B, C, *spatial); an optional ``mask`` (B, 1, *spatial) of 0/1 excludes
voxels (1 = counted), e.g. an ignore label.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_sdm.checks import check_positive, check_same_shape
from nnunet_sdm.losses.dice import SoftDiceLoss, overlap_sums


class MapDiceLoss(SoftDiceLoss):
    """Eq. 2 of Li et al.: ``1 - sum_c`` of a Dice between probabilities and the NI-DM penalty map.

    Args:
        batch_dice: pool the voxel sums over the batch (nnU-Net's ``batch_dice``); otherwise eq. 2 is
            evaluated per sample and averaged over the batch.
        ddp: with ``batch_dice``, also pool the sums over all DDP ranks.
        smooth: the ``eps`` of eq. 2, > 0.

    ``forward(probabilities, distance_map, mask=None)``: ``probabilities`` (B, C, *spatial) are the
    foreground class probabilities, ``distance_map`` the NI-DM of the same classes, both in [0, 1].
    The arguments and the voxel sums are :class:`~nnunet_sdm.losses.dice.SoftDiceLoss`'s.
    """

    def forward(
        self, probabilities: torch.Tensor, distance_map: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_same_shape("MapDiceLoss(probabilities, distance_map)", probabilities, distance_map, True)
        product, sum_p, sum_phi = overlap_sums(probabilities, distance_map, mask, self.batch_dice, self.ddp)
        score = (2 * product + self.smooth) / (sum_p + sum_phi + self.smooth)  # (B, C) or (C,)
        per_sample = 1 - score.sum(-1)
        return per_sample if per_sample.ndim == 0 else per_sample.mean()


class SmoothL1MapLoss(nn.Module):
    """Smooth L1 between a predicted and a target distance map (Li et al., section 2.3).

    Per class: mean over batch and (unmasked) voxels; summed over classes. ``beta`` > 0 is the
    transition point between the quadratic and the linear part (torch's ``smooth_l1_loss``).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_same_shape("SmoothL1MapLoss(prediction, target)", prediction, target, True)
        per_voxel = F.smooth_l1_loss(prediction.float(), target.float(), reduction="none", beta=self.beta)
        axes = (0, *range(2, per_voxel.ndim))
        if mask is None:
            return per_voxel.mean(axes).sum()
        mask = mask.to(per_voxel.dtype).expand_as(per_voxel)
        return ((per_voxel * mask).sum(axes) / mask.sum(axes).clamp_min(1.0)).sum()
