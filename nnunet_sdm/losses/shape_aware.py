"""The joint SDM + segmentation loss of Xue et al. 2020, eq. 5, and its ablations.

    L = L_Dice(H_k(p), y_seg) + lambda * (L_product(p, y_sdm) + L_1(p, y_sdm)),   lambda = 10, k = 1500

p is the predicted SDM (tanh, normalised to [-1, 1], negative inside), y_sdm the normalised target
SDM, y_seg the one-hot foreground masks and H_k the corrected Heaviside of eq. 3. The ablations of
Tables 1, 2 and 4 switch terms off: "SDM" only (dice_weight = 0), "L1 + Dice" (product_weight = 0).
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import check_non_negative, check_positive
from nnunet_sdm.losses.dice import SoftDiceLoss
from nnunet_sdm.losses.heaviside import XUE_STEEPNESS, heaviside
from nnunet_sdm.losses.regression import L1SDMLoss, ProductSDMLoss

XUE_LAMBDA = 10.0


class ShapeAwareSDMLoss(nn.Module):
    """Eq. 5 of Xue et al. 2020, returning its terms.

    Args:
        k: Heaviside steepness (eq. 3), > 0.
        sdm_weight: lambda of eq. 5, >= 0.
        dice_weight, l1_weight, product_weight: switches (>= 0) for the ablations.
        batch_dice, ddp, smooth: passed to :class:`SoftDiceLoss`.

    ``forward(pred_sdm, target_sdm, target_onehot)`` takes tensors of shape (B, C, *spatial) (C
    foreground classes) and returns a dict with ``loss`` (the weighted total) and the unweighted
    terms ``dice``, ``l1`` and ``product`` that are switched on.
    """

    def __init__(
        self,
        k: float = XUE_STEEPNESS,
        sdm_weight: float = XUE_LAMBDA,
        dice_weight: float = 1.0,
        l1_weight: float = 1.0,
        product_weight: float = 1.0,
        batch_dice: bool = False,
        ddp: bool = False,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.k = check_positive("k", k)
        self.sdm_weight = check_non_negative("sdm_weight (lambda)", sdm_weight)
        self.dice_weight = check_non_negative("dice_weight", dice_weight)
        self.l1_weight = check_non_negative("l1_weight", l1_weight)
        self.product_weight = check_non_negative("product_weight", product_weight)
        if self.dice_weight == 0 and self.sdm_weight * (self.l1_weight + self.product_weight) == 0:
            raise ValueError("ShapeAwareSDMLoss: every term is switched off (all weights are 0)")
        self.dice = SoftDiceLoss(batch_dice=batch_dice, ddp=ddp, smooth=smooth)
        self.l1 = L1SDMLoss()
        self.product = ProductSDMLoss()

    def forward(
        self, pred_sdm: torch.Tensor, target_sdm: torch.Tensor, target_onehot: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        total = pred_sdm.new_zeros((), dtype=torch.float32)
        if self.dice_weight > 0:
            terms["dice"] = self.dice(heaviside(pred_sdm, self.k), target_onehot)
            total = total + self.dice_weight * terms["dice"]
        if self.sdm_weight > 0 and self.l1_weight > 0:
            terms["l1"] = self.l1(pred_sdm, target_sdm)
            total = total + self.sdm_weight * self.l1_weight * terms["l1"]
        if self.sdm_weight > 0 and self.product_weight > 0:
            terms["product"] = self.product(pred_sdm, target_sdm)
            total = total + self.sdm_weight * self.product_weight * terms["product"]
        return {"loss": total, **terms}
