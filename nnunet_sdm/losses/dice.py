"""Soft Dice loss on probabilities (Xue et al. 2020, eq. 1).

    L_Dice = N - sum_t (2 * sum_x y_t p_t + eps) / (sum_x y_t + sum_x p_t + eps)

summed over the N foreground classes t, i.e. sum_t (1 - Dice_t). Eq. 1 as printed puts eps inside
the doubled numerator, 2 (sum y p + eps) / (... + eps), which makes an absent class with an empty
prediction score Dice 2; we use the usual (2 sum y p + eps) so that case scores 1.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import check_positive, check_same_shape
from nnunet_sdm.losses.distributed import sum_over_ranks


def overlap_sums(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    batch_dice: bool,
    ddp: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: sum(p * y), sum(p), sum(y) over the (unmasked) voxels of (B, C, *spatial) inputs, in
    float32; shape (B, C), or (C,) summed over the batch (``batch_dice``) and, under DDP, over the ranks
    (nnU-Net's ``ddp`` flag: every rank then computes the same Dice of the global batch)."""
    p, y = probabilities.float(), target.float()
    if mask is not None:
        mask = mask.to(p.dtype)
        p, y = p * mask, y * mask
    axes = tuple(range(2, p.ndim))
    sums = ((p * y).sum(axes), p.sum(axes), y.sum(axes))
    if batch_dice:
        sums = tuple(t.sum(0) for t in sums)
        if ddp:
            sums = tuple(sum_over_ranks(t) for t in sums)
    return sums


class SoftDiceLoss(nn.Module):
    """Sum over classes of (1 - soft Dice) between probabilities and one-hot targets.

    Args:
        batch_dice: pool the sums over the batch (nnU-Net's ``batch_dice``) instead of averaging
            per-sample Dice values.
        ddp: with ``batch_dice``, also pool the sums over all DDP ranks (nnU-Net's ``ddp`` flag).
        smooth: the eps of eq. 1.

    Inputs ``probabilities`` and ``target`` have shape (B, C, *spatial); ``mask`` (B, 1, *spatial),
    optional, excludes voxels (1 = counted).
    """

    def __init__(self, batch_dice: bool = False, ddp: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.batch_dice = bool(batch_dice)
        self.ddp = bool(ddp)
        self.smooth = check_positive("smooth", smooth)

    def forward(
        self, probabilities: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_same_shape("SoftDiceLoss(probabilities, target)", probabilities, target)
        intersect, sum_p, sum_y = overlap_sums(probabilities, target, mask, self.batch_dice, self.ddp)
        dice = (2 * intersect + self.smooth) / (sum_y + sum_p + self.smooth).clamp_min(1e-8)
        per_class_loss = 1 - dice
        if not self.batch_dice:
            per_class_loss = per_class_loss.mean(0)
        return per_class_loss.sum()
