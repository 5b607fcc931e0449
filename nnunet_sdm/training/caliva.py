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

Region-based datasets (nested, overlapping regions: no softmax over classes): each region's BCE (nnU-Net's
region loss) weighted by (1 + Phi_r), Phi_r that region's own map (``DistancePenalisedBinaryCrossEntropy``).
The ignore label: its voxels are left out of the mean (as stock's CE does), and Phi is built from the
certified SDM only (``certified_signed_distance``): voxels whose distances depend on unknown labels get
Phi = 0, the plain CE weight, and do not enter the parts' min-max normalisation.

``caliva_penalty`` runs where the labels are: on an accelerator with the exact torch EDT (no host round
trip per step and scale), on the CPU with ``edt``.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import non_negative
from nnunet_sdm.distance import caliva_penalty_of_sdm
from nnunet_sdm.losses.distance_penalty import (
    DistancePenalisedBinaryCrossEntropy,
    DistancePenalisedCrossEntropy,
)
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
        penalised = (
            DistancePenalisedBinaryCrossEntropy() if self.region_based else DistancePenalisedCrossEntropy()
        )
        parts: dict[str, nn.Module] = {"penalised_ce": penalised}
        if self.dice_weight > 0:
            parts["dice"] = nnunet_soft_dice_loss(self)
        return nn.ModuleDict(parts)

    def distance_from_sdm(
        self, sdm: torch.Tensor, certified: torch.Tensor | None, spacing: tuple[float, ...]
    ) -> torch.Tensor:
        # Phi on the SDM's device: (B, 1, *spatial), one map for all foreground classes; per region for regions
        return caliva_penalty_of_sdm(sdm, per_class=self.region_based, certified=certified)

    def distance_target(self, target: ScaleTarget) -> tuple[torch.Tensor, torch.Tensor | None]:
        phi, _ = super().distance_target(target)
        return phi, None  # Phi is 0 where uncertified; the CE itself is masked by ``known``

    def loss_term_weights(self) -> dict[str, float]:
        return {"penalised_ce": self.penalised_ce_weight, "dice": self.dice_weight}

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        if self.region_based:
            ce = self.loss["penalised_ce"](output.seg, target.masks, target.distance, target.known)
        else:
            ce = self.loss["penalised_ce"](output.seg, target.labels, target.distance, target.known)
        terms = {"penalised_ce": ce}
        total = self.penalised_ce_weight * terms["penalised_ce"]
        if self.dice_weight > 0:
            terms["dice"] = self.loss["dice"](output.seg, target.loss_target)
            total = total + self.dice_weight * terms["dice"]
        return {"loss": total, **terms}


class nnUNetTrainerDistPenaltyDiceCE(nnUNetTrainerDistPenaltyCE):
    """nnU-Net's soft Dice + Calivá et al.'s penalised CE (eq. 2)."""

    dice_weight = 1.0
