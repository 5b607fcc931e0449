"""Xue et al., AAAI 2020: shape-aware segmentation by predicting signed distance maps.

The network regresses one SDM per foreground class (tanh, targets normalised per patch and class to
[-1, 1], negative inside). The segmentation is the Heaviside of the SDM: sigmoid(-k * sdm) with
k = 1500 in training (eq. 3, sign corrected), the exact step at inference (argmax of
``[0, -s * sdm]``, see :mod:`nnunet_sdm.network.sdm_head`). Loss (eq. 5): Dice(H(sdm), labels)
+ lambda * (L1 + product), lambda = 10, per deep-supervision scale with nnU-Net's weights.

Variants, named by what they change (nnU-Net's habit):
- ``nnUNetTrainerSDM_Xue2020``: eq. 5, the paper's "SDM + Dice".
- ``nnUNetTrainerSDM_Xue2020SDMOnly``: lambda * (L1 + product) only (the paper's "SDM").
- ``nnUNetTrainerSDM_Xue2020L1``: Dice + lambda * L1 (the paper's "L1 + Dice").
- ``nnUNetTrainerSDM_Xue2020Truncated``: SDM target clamp(sdm / tau, -1, 1) with tau in mm instead of the
  per-patch normalisation, which depends on the patch's extent.
- ``nnUNetTrainerSDM_Xue2020TargetsInLoader``: the same targets made in the data-loader workers on the CPU
  (``edt``) instead of on the training device, to compare the two.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import non_negative, positive
from nnunet_sdm.losses import XUE_LAMBDA, XUE_STEEPNESS, ShapeAwareSDMLoss
from nnunet_sdm.network import SDMOutput
from nnunet_sdm.training.base import ScaleTarget, nnUNetTrainerDistanceBase
from nnunet_sdm.training.loader_targets import SDMTargetTransform


class nnUNetTrainerSDM_Xue2020(nnUNetTrainerDistanceBase):
    """Xue et al. 2020, eq. 5: Dice(Heaviside(sdm)) + lambda (L1 + product)."""

    supports_regions = False
    supports_ignore_label = False
    unsupported_reason = (
        "Xue et al.'s network has no segmentation head: its segmentation is the Heaviside of one SDM per class "
        "of a label map, taken at inference as the argmax over [background, classes] of mutually exclusive "
        "labels (not nnU-Net's per-region sigmoid), and its targets are normalised by the largest distances "
        "of a completely labelled patch and scored by a Dice over all of it."
    )
    heaviside_k: float = XUE_STEEPNESS
    sdm_weight: float = XUE_LAMBDA
    dice_weight: float = 1.0
    l1_weight: float = 1.0
    product_weight: float = 1.0

    def build_scale_loss(self) -> nn.Module:
        return ShapeAwareSDMLoss(
            k=self.heaviside_k,
            sdm_weight=self.sdm_weight,
            dice_weight=self.dice_weight,
            l1_weight=self.l1_weight,
            product_weight=self.product_weight,
            batch_dice=self.configuration_manager.batch_dice,
            ddp=self.is_ddp,
        )

    setting_rules = {
        "heaviside_k": positive,
        "sdm_weight": non_negative,
        "dice_weight": non_negative,
        "l1_weight": non_negative,
        "product_weight": non_negative,
    }

    def check_setting_combinations(self) -> None:
        self.build_scale_loss()  # the loss refuses weights that switch every term off

    def loss_term_weights(self) -> dict[str, float]:
        return {
            "dice": self.dice_weight,
            "l1": self.sdm_weight * self.l1_weight,
            "product": self.sdm_weight * self.product_weight,
        }

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        return self.loss(output.sdm, target.distance, target.onehot)


class nnUNetTrainerSDM_Xue2020SDMOnly(nnUNetTrainerSDM_Xue2020):
    """Xue et al. 2020 ablation "SDM": lambda (L1 + product), no Dice term."""

    dice_weight = 0.0


class nnUNetTrainerSDM_Xue2020L1(nnUNetTrainerSDM_Xue2020):
    """Xue et al. 2020 ablation "L1 + Dice": Dice + lambda L1, no product loss."""

    product_weight = 0.0


class nnUNetTrainerSDM_Xue2020Truncated(nnUNetTrainerSDM_Xue2020):
    """SDM targets clamp(sdm / tau, -1, 1), tau in mm, instead of the per-patch normalisation."""

    truncation_mm = 10.0


class nnUNetTrainerSDM_Xue2020TargetsInLoader(nnUNetTrainerSDM_Xue2020):
    """nnUNetTrainerSDM_Xue2020 with its SDM targets made in the data-loader workers (CPU, edt)."""

    distance_targets_in_loader = True

    def _with_sdm_targets(self, transforms):
        transforms.transforms.append(
            SDMTargetTransform(
                self.foreground_labels,
                self.configuration_manager.spacing[-len(self.configuration_manager.patch_size) :],
            )
        )
        return transforms

    def get_training_transforms(self, *args, **kwargs):
        return self._with_sdm_targets(super().get_training_transforms(*args, **kwargs))

    def get_validation_transforms(self, *args, **kwargs):
        return self._with_sdm_targets(super().get_validation_transforms(*args, **kwargs))
