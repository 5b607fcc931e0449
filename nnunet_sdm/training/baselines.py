"""Distance-based baselines on nnU-Net's segmentation head, and nnU-Net's own losses as building blocks.

- ``nnUNetTrainerBoundary``: Kervadec et al. (MIDL 2019 / MedIA 2021) boundary loss with the paper's
  rebalancing, L = alpha Dice + (1 - alpha) L_B, alpha = max(0.01, 1 - 0.01 * epoch). The regional loss
  is nnU-Net's soft Dice (in place of the paper's GDL); phi is the raw SDM in mm at each
  deep-supervision scale. L_B keeps the constant the paper drops, so it is >= 0 with its minimum 0 at
  the ground truth, also for classes that fill the patch (see :mod:`nnunet_sdm.losses.boundary`).
- ``nnUNetTrainerHD``: Karimi & Salcudean (TMI 2019) distance-transform Hausdorff loss (alpha = 2),
  L = L_DiceCE + lambda L_HD with nnU-Net's Dice + CE. lambda follows Karimi's rule, "the ratio of the
  mean of the two loss terms" over the previous training epoch: lambda_e = mean(1 + L_DiceCE) / mean(L_HD)
  (1 + nnU-Net's Dice + CE = CE + (1 - soft Dice) >= 0, nnU-Net's Dice term being -Dice), so both terms
  contribute alike while the Dice + CE keeps the scale nnU-Net's learning rate is tuned for. Before a
  previous epoch exists (the first epoch) the ratio of the current batch's values is used; the epoch's
  lambda is kept in the checkpoints, so ``--c`` resumes with it. Set ``hd_lambda`` to a number for a
  fixed lambda.

Both predict from the segmentation head (argmax of the logits), as stock nnU-Net. Region-based datasets: the
probabilities are each region's sigmoid, the Dice (+ BCE) stock's region loss, and phi / d_q are per region.
The ignore label: stock's losses mask it; phi and d_q come from the certified SDM and the boundary and HD
terms count, per class, only the voxels where it is certified.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nnunet_sdm.checks import non_negative, optional, positive
from nnunet_sdm.losses.boundary import BoundaryLoss, check_alpha_schedule, rebalance_alpha
from nnunet_sdm.losses.hausdorff import (
    KARIMI_ALPHA,
    HausdorffDTLoss,
    boundary_distance,
    boundary_distance_of_sdm,
)
from nnunet_sdm.network import SDMOutput
from nnunet_sdm.training.base import (
    ScaleTarget,
    nnunet_dice_ce_loss,
    nnunet_soft_dice_loss,
    nnUNetTrainerDistanceBase,
)


# ---- Kervadec et al.: boundary loss ------------------------------------------------------------------
class nnUNetTrainerBoundary(nnUNetTrainerDistanceBase):
    """Kervadec et al.: alpha * nnU-Net soft Dice + (1 - alpha) * boundary loss, alpha rebalanced per epoch."""

    has_segmentation_head = True
    has_sdm_head = False
    uses_distance_targets = True

    boundary_alpha_start: float = 1.0
    boundary_alpha_step: float = 0.01
    boundary_alpha_floor: float = 0.01

    def check_setting_combinations(self) -> None:
        check_alpha_schedule(
            self.boundary_alpha_start, self.boundary_alpha_step, self.boundary_alpha_floor, "boundary_alpha_"
        )

    @property
    def boundary_alpha(self) -> float:
        """Weight of the regional (Dice) loss in the current epoch."""
        return rebalance_alpha(
            int(self.current_epoch),
            self.boundary_alpha_start,
            self.boundary_alpha_step,
            self.boundary_alpha_floor,
        )

    def build_scale_loss(self) -> nn.Module:
        return nn.ModuleDict({"dice": nnunet_soft_dice_loss(self), "boundary": BoundaryLoss()})

    def distance_from_sdm(
        self, sdm: torch.Tensor, certified: torch.Tensor | None, spacing: tuple[float, ...]
    ) -> torch.Tensor:
        # the raw SDM in mm (negative inside; -D / +D for a class filling / absent from the patch)
        return sdm

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        dice = self.loss["dice"](output.seg, target.loss_target)
        probabilities = self.foreground_probabilities(output.seg)
        boundary = self.loss["boundary"](probabilities, target.distance, target.certified)
        alpha = self.boundary_alpha
        return {"loss": alpha * dice + (1 - alpha) * boundary, "dice": dice, "boundary": boundary}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.print_to_log_file(f"boundary loss: alpha (Dice weight) {self.boundary_alpha:.2f}")


# ---- Karimi & Salcudean: distance-transform Hausdorff loss -----------------------------------------------
class nnUNetTrainerHD(nnUNetTrainerDistanceBase):
    """Karimi & Salcudean: nnU-Net Dice + CE + lambda * HD-DT loss (alpha = 2), lambda by Karimi's ratio rule."""

    has_segmentation_head = True
    has_sdm_head = False
    uses_distance_targets = True

    hd_alpha: float = KARIMI_ALPHA
    #: None: Karimi's adaptive lambda (module docstring); a number: that fixed lambda
    hd_lambda: float | None = None
    #: the adaptive lambda from the previous training epoch's means (None before the first epoch ends)
    _hd_lambda_from_epoch: float | None = None

    setting_rules = {"hd_alpha": positive, "hd_lambda": optional(non_negative)}

    def build_scale_loss(self) -> nn.Module:
        return nn.ModuleDict({"dice_ce": nnunet_dice_ce_loss(self), "hd": HausdorffDTLoss(self.hd_alpha)})

    def distance_from_sdm(
        self, sdm: torch.Tensor, certified: torch.Tensor | None, spacing: tuple[float, ...]
    ) -> torch.Tensor:
        # d_q: unsigned distance (mm) to each class's ground-truth boundary, 0 without boundary
        return boundary_distance_of_sdm(sdm)

    @staticmethod
    def karimi_lambda(dice_ce: float, hd: float) -> float | None:
        """mean(1 + DiceCE) / mean(HD), or None if undefined (HD mean not > 0, or not finite)."""
        ratio = (1.0 + float(dice_ce)) / float(hd) if float(hd) > 0 else math.nan
        return ratio if math.isfinite(ratio) and ratio >= 0 else None

    def current_hd_lambda(self, dice_ce: torch.Tensor, hd: torch.Tensor) -> torch.Tensor | float:
        if self.hd_lambda is not None:
            return float(self.hd_lambda)
        if self._hd_lambda_from_epoch is not None:
            return self._hd_lambda_from_epoch
        # no previous epoch yet: the ratio of this batch's values (a constant, no gradient)
        return ((1.0 + dice_ce.detach().float()) / hd.detach().float().clamp_min(1e-8)).clamp_min(0.0)

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        dice_ce = self.loss["dice_ce"](output.seg, target.loss_target)
        with torch.no_grad():
            distance_pred = boundary_distance(self.predicted_masks(output.seg), target.spacing)
        hd = self.loss["hd"](
            self.foreground_probabilities(output.seg),
            target.onehot,
            distance_pred,
            target.distance,
            target.certified,
        )
        weight = self.current_hd_lambda(dice_ce, hd)
        return {"loss": dice_ce + weight * hd, "dice_ce": dice_ce, "hd": hd}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        if self.hd_lambda is not None:
            return
        epoch = self.epoch_term_means["train"]  # over all DDP ranks, from the base
        means = [epoch["dice_ce"], epoch["hd"]]
        ratio = self.karimi_lambda(*means)
        if ratio is not None:
            self._hd_lambda_from_epoch = ratio
        self.print_to_log_file(
            f"HD loss: lambda for the next epoch {self._hd_lambda_from_epoch} "
            f"(epoch means: dice_ce {means[0]:.4f}, hd {means[1]:.4f})"
        )

    def checkpoint_extras(self) -> dict:
        return {**super().checkpoint_extras(), "hd_lambda_from_epoch": self._hd_lambda_from_epoch}

    def load_checkpoint_extras(self, extras: dict, source: str) -> None:
        super().load_checkpoint_extras(extras, source)
        self._hd_lambda_from_epoch = extras.get("hd_lambda_from_epoch")
