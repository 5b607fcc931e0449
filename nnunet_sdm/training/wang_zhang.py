"""Wang & Zhang, FLARE 2021: "nnUNet with Signed Distance Map" -- a dual-head nnU-Net.

The network has nnU-Net's segmentation head and an SDM head (one tanh channel per foreground class,
"a multi-head nnUNet to generate both probability map and distance map", after SegWithDistMap). The
segmentation head is trained with nnU-Net's usual Dice + CE ("the summation between Dice loss and cross
entropy loss"), built exactly as ``nnUNetTrainer._build_loss`` does for label datasets; the SDM head
regresses the SDM normalised per patch and class to [-1, 1] (Xue et al.; the base trainer's default
target) with an L2 loss ("We use L2 loss to regularize the regression task of the distance map"):

    L = L_DiceCE(seg, labels) + sdm_head_weight * L2(sdm, normalised SDM),   sdm_head_weight = 1

per deep-supervision scale with nnU-Net's weights. The paper gives no weight; 1 is the plain sum.
Inference uses the segmentation head only (argmax of its logits), as stock nnU-Net. Region-based datasets:
stock's Dice + BCE and one SDM per region. The ignore label: stock's loss masks it, and the L2 counts only
the voxels whose SDM is certified, normalised by the largest certified distances.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import non_negative
from nnunet_sdm.losses.regression import L2SDMLoss
from nnunet_sdm.network import SDMOutput
from nnunet_sdm.training.base import ScaleTarget, nnunet_dice_ce_loss, nnUNetTrainerDistanceBase


class nnUNetTrainerSDMDualHead(nnUNetTrainerDistanceBase):
    """Wang & Zhang 2021: nnU-Net Dice + CE on the segmentation head + sdm_head_weight * L2 on the SDM head."""

    has_segmentation_head = True
    has_sdm_head = True
    uses_distance_targets = True

    sdm_head_weight: float = 1.0

    setting_rules = {"sdm_head_weight": non_negative}

    def build_scale_loss(self) -> nn.Module:
        return nn.ModuleDict({"dice_ce": nnunet_dice_ce_loss(self), "l2": L2SDMLoss()})

    def loss_term_weights(self) -> dict[str, float]:
        return {"dice_ce": 1.0, "l2": self.sdm_head_weight}

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        dice_ce = self.loss["dice_ce"](output.seg, target.loss_target)
        l2 = self.loss["l2"](output.sdm, target.distance, target.certified)
        return {"loss": dice_ce + self.sdm_head_weight * l2, "dice_ce": dice_ce, "l2": l2}
