"""Calivá et al., MIDL 2019: distance map loss penalty term for semantic segmentation.

The segmentation head (nnU-Net's, softmax over background + classes) is trained with the
"penalised" cross-entropy of eq. 2, the voxel-wise CE weighted by (1 + Phi) and averaged over voxels
(:class:`~nnunet_sdm.losses.distance_penalty.DistancePenalisedCrossEntropy`). Phi is one map for all
classes (:func:`~nnunet_sdm.distance.caliva_penalty`): the reverted, min-max normalised distance maps
outside all classes and inside each class independently, combined; in [0, 1], 1 next to every boundary.
It is computed per deep-supervision scale from that scale's augmented labels with the scale's spacing.

- ``nnUNetTrainerDistPenaltyCE``: eq. 2 alone.
- ``nnUNetTrainerDistPenaltyDiceCE``: nnU-Net's soft Dice (``MemoryEfficientSoftDiceLoss``, foreground
  classes, batch Dice from the plans, smooth 1e-5) + eq. 2, i.e. nnU-Net's Dice + CE with the CE
  penalised -- the paper benchmarks the penalty against Dice; this variant shows it on nnU-Net's loss.

``caliva_penalty`` runs where the labels are: on an accelerator with the exact torch EDT (no host round
trip per step and scale), on the CPU with ``edt``.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import non_negative
from nnunet_sdm.distance import caliva_penalty
from nnunet_sdm.losses.distance_penalty import DistancePenalisedCrossEntropy
from nnunet_sdm.network import SDMOutput
from nnunet_sdm.training.base import (
    ScaleTarget,
    nnunet_soft_dice_loss,
    nnUNetTrainerDistanceBase,
)


class nnUNetTrainerDistPenaltyCE(nnUNetTrainerDistanceBase):
    """Calivá et al. 2019, eq. 2: mean over voxels of (1 + Phi) * CE."""

    has_segmentation_head = True
    has_sdm_head = False
    uses_distance_targets = True

    #: weight of nnU-Net's soft Dice term (0: eq. 2 alone)
    dice_weight: float = 0.0
    penalised_ce_weight: float = 1.0

    setting_rules = {"dice_weight": non_negative, "penalised_ce_weight": non_negative}

    def check_setting_combinations(self) -> None:
        if self.dice_weight == 0 and self.penalised_ce_weight == 0:
            raise ValueError("dice_weight and penalised_ce_weight are both 0 (no loss)")

    def build_scale_loss(self) -> nn.Module:
        parts: dict[str, nn.Module] = {"penalised_ce": DistancePenalisedCrossEntropy()}
        if self.dice_weight > 0:
            parts["dice"] = nnunet_soft_dice_loss(self)
        return nn.ModuleDict(parts)

    def distance_target(self, labels: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
        # Phi (B, 1, *spatial), one map for all foreground classes, on the labels' device
        return caliva_penalty(labels, spacing, self.foreground_labels)

    def loss_term_weights(self) -> dict[str, float]:
        return {"penalised_ce": self.penalised_ce_weight, "dice": self.dice_weight}

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        terms = {"penalised_ce": self.loss["penalised_ce"](output.seg, target.labels, target.distance)}
        total = self.penalised_ce_weight * terms["penalised_ce"]
        if self.dice_weight > 0:
            terms["dice"] = self.loss["dice"](output.seg, target.labels[:, None])
            total = total + self.dice_weight * terms["dice"]
        return {"loss": total, **terms}


class nnUNetTrainerDistPenaltyDiceCE(nnUNetTrainerDistPenaltyCE):
    """nnU-Net's soft Dice + Calivá et al.'s penalised CE (eq. 2)."""

    dice_weight = 1.0
