"""The flagship ``nnUNetTrainerSDM``: nnU-Net's segmentation, made shape-aware by an SDM head.

Design (why each part is there):

- **nnU-Net's own segmentation head and loss** (Dice + CE, built as ``nnUNetTrainer`` does) carry the
  segmentation, and inference is that head alone, exactly as stock nnU-Net: the trainer cannot forget
  what stock learns, and every nnU-Net tool (predictor, ensembling, post-processing) sees a stock model.
  The network is stock's, initialised identically from the same random state (the SDM rows of the 1x1
  output layers are appended after), so with the distance terms off it *is* ``nnUNetTrainer`` (A/A tests).
- **An SDM head** (one *linear* channel per foreground class at every deep-supervision scale, its rows
  of the 1x1 output layers starting at zero) regresses the signed distance map **truncated in mm**,
  ``clamp(sdm / tau, -1, 1)``, tau = 5 mm, with
  an L2 loss (Wang & Zhang 2021) plus Xue et al.'s product loss (eq. 4). Not Xue's per-patch
  normalisation: it divides the outside distances by the largest one in the patch, so one voxel next to
  a boundary becomes a target of ~0.02 in a large patch (and depends on where the patch was cut); the
  truncated target is 1 / tau per mm everywhere (docs/diagnosis.md). Linear, not Xue's tanh: the target
  is +1 on most voxels of a patch (everything tau away from the object), which tanh reaches only at
  infinity, and under nnU-Net's SGD (momentum 0.99) tanh rows overshoot into saturation at +1 within the
  first epoch, where their gradient vanishes; they then stay "outside" everywhere (measured on hippocampus,
  docs/diagnosis.md: predicted SDM > 0.8 on every voxel of the structure). Linear rows keep a gradient proportional to
  their error.
- **A differentiable Heaviside couples the heads** (dual-task consistency, Luo et al. AAAI 2021):
  ``mean (softmax_c - sigmoid(-k * sdm_c))^2``, with k chosen per scale so that the soft step reaches
  0.95 one voxel from the zero level (k = 3 tau / spacing). Xue's k = 1500 on [-1, 1] SDMs has a usable
  gradient only within ~1/500 of the normalisation range of the zero level set, i.e. almost nowhere
  (docs/diagnosis.md); the coupling pulls the segmentation's probabilities towards the SDM's inside /
  outside, which is what removes stray blobs far from the object.
- **The SDM head's pull on the shared network is ramped in** linearly over the first ``ramp_fraction``
  of the epochs (Kervadec et al. 2019 raise their boundary-loss weight during training; Ma et al. 2020
  schedule their distance losses too), and so is the consistency weight. The SDM rows of the output
  layers always learn at full rate (:class:`~nnunet_sdm.network.sdm_head.SplitOutputConv` scales only the
  gradient they send to the features below): a fresh SDM head is far from its targets, and its L2
  gradient into the shared decoder is then larger than the segmentation's own (docs/diagnosis.md: 52 %
  of the total at a warm start even at weight 0.1, 97 % for the plain dual-head trainer at weight 1),
  which is what made the dual-head trainer fall behind stock. By the end of the ramp the head fits and
  its remaining gradient carries what the shared features lack: distance to the boundary.
- **Weights**: ``sdm_weight`` (L2 + product) 0.1 and ``consistency_weight`` 0.1 keep the distance terms
  at a fraction of the Dice + CE gradient (the shares are logged each epoch in ``loss_terms.json``),
  instead of the 1:1 of the plain dual-head trainer whose L2 gradient competed with the segmentation.

Region-based datasets: nnU-Net's Dice + BCE, one SDM per region and the sigmoid of each region logit in
the consistency. The ignore label: stock's losses mask it; the SDM terms count only voxels whose truncated
SDM is certified (the same whatever the unknown labels are); the consistency, label-free, counts all.

Loss per deep-supervision scale (nnU-Net's weights), with w the ramp in [0, 1]::

    L = DiceCE(seg, y) + sdm_weight * (L2(sdm, t) + product(sdm, t))
        + w * consistency_weight * mean (softmax(seg)_fg - H_k(sdm))^2

and the gradient of the SDM rows into the shared network multiplied by w.

Measured results, by dataset: docs/accuracy.md (the earliest were made with a dead SDM head, see above).
The weights and ramp were set with the dead head and need re-choosing on validation folds (the ablations
``_LongRamp`` and ``_DetachedHead`` below).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nnunet_sdm.checks import non_negative, number, positive
from nnunet_sdm.losses import SDMHeadTermsLoss
from nnunet_sdm.network import SDMOutput, set_sdm_trunk_gradient_scale
from nnunet_sdm.training.base import ScaleTarget, nnunet_dice_ce_loss, nnUNetTrainerDistanceBase

#: log(0.95 / 0.05): sigmoid(x) = 0.95 at this x
_LOGIT_95 = math.log(19.0)


def labeled_rows_only(
    distance: torch.Tensor, certified: torch.Tensor | None, rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The labeled rows' SDM targets padded to ``rows`` batch rows, and the mask of the voxels the SDM
    regression counts: the labeled rows' certified voxels (all, when ``certified`` is None), no voxel of
    the padded (unlabeled) rows. The regression terms' means then equal those of the labeled rows alone."""
    labeled = distance.shape[0]
    if certified is None:
        certified = torch.ones((labeled, 1, *distance.shape[2:]), dtype=torch.bool, device=distance.device)
    pad = rows - labeled
    distance = torch.cat([distance, distance.new_zeros((pad, *distance.shape[1:]))])
    certified = torch.cat([certified, certified.new_zeros((pad, *certified.shape[1:]))])
    return distance, certified


class nnUNetTrainerSDM(nnUNetTrainerDistanceBase):
    """nnU-Net's Dice + CE head + a truncated-SDM head (L2 + product) + Heaviside consistency; see the module."""

    has_segmentation_head = True
    has_sdm_head = True
    uses_distance_targets = True

    #: SDM target clamp(sdm / truncation_mm, -1, 1), computed in that band only (the base's targets)
    truncation_mm = 5.0
    #: a linear SDM output: tanh rows saturate at +1 under nnU-Net's SGD (momentum 0.99) and stop learning
    sdm_activation = "linear"
    #: weight of the SDM regression terms (L2 and product); the SDM rows always learn at this weight
    sdm_weight: float = 0.1
    #: weight of the Heaviside consistency between the heads once ramped in
    consistency_weight: float = 0.1
    #: the soft Heaviside reaches 0.95 / 0.05 this many voxels from the SDM's zero level
    heaviside_voxels: float = 1.0
    #: fraction of the epochs over which the SDM head's gradient into the shared network and the
    #: consistency weight ramp from 0 to full (0: no ramp)
    ramp_fraction: float = 0.1

    setting_rules = {
        "truncation_mm": positive,  # never None here: the consistency's k is set from it
        "heaviside_voxels": positive,
        "sdm_weight": non_negative,
        "consistency_weight": non_negative,
        "ramp_fraction": number(minimum=0.0, maximum=1.0),
    }

    def build_scale_loss(self) -> nn.Module:
        # L2, product and consistency in one pass that keeps nothing extra for backward (memory budget)
        return nn.ModuleDict(
            {
                "dice_ce": nnunet_dice_ce_loss(self),
                "sdm_head": SDMHeadTermsLoss(
                    regions=self.region_based, chunk_elements=self.sdm_chunk_elements
                ),
            }
        )

    def distance_ramp(self) -> float:
        """w in [0, 1]: 0 at epoch 0, rising linearly to 1 at ``ramp_fraction * num_epochs``."""
        ramp_epochs = self.ramp_fraction * self.num_epochs
        return 1.0 if ramp_epochs <= 0 else min(1.0, self.current_epoch / ramp_epochs)

    def heaviside_k(self, spacing: tuple[float, ...]) -> float:
        """Steepness on the truncated SDM so the soft step is 0.95 ``heaviside_voxels`` voxels from zero."""
        return _LOGIT_95 * self.truncation_mm / (self.heaviside_voxels * min(spacing))

    def consistency_ramp(self) -> float:
        """The consistency weight's ramp in [0, 1] (by default the distance ramp)."""
        return self.distance_ramp()

    def loss_term_weights(self) -> dict[str, float]:
        return {
            "dice_ce": 1.0,
            "l2": self.sdm_weight,
            "product": self.sdm_weight,
            "consistency": self.consistency_ramp() * self.consistency_weight,
        }

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        set_sdm_trunk_gradient_scale(self.network, self.distance_ramp())
        self.print_to_log_file(
            f"distance ramp {self.distance_ramp():.3f} (SDM gradient into the shared network)"
        )

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        """The terms of one scale. Output rows beyond the target's are unlabeled patches (semi-supervised
        batches): the label-free consistency counts them, the supervised terms do not."""
        labeled = target.masks.shape[0]
        distance, regression_mask = target.distance, target.certified
        if output.seg.shape[0] > labeled:
            distance, regression_mask = labeled_rows_only(distance, regression_mask, output.seg.shape[0])
        terms = {
            "dice_ce": self.loss["dice_ce"](output.seg[:labeled], target.loss_target),
            **self.loss["sdm_head"](
                output.seg, output.sdm, distance, self.heaviside_k(target.spacing), regression_mask
            ),
        }
        weights = self.loss_term_weights()
        total = sum(weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms}


class nnUNetTrainerSDM_NoRamp(nnUNetTrainerSDM):
    """Ablation: no ramp; the SDM head's gradient and the consistency reach the shared network from step 1."""

    ramp_fraction = 0.0


class nnUNetTrainerSDM_Weight1(nnUNetTrainerSDM):
    """Ablation: SDM and consistency weights 1 (the plain sum, as the dual-head trainer) instead of 0.1."""

    sdm_weight = 1.0
    consistency_weight = 1.0


class nnUNetTrainerSDM_LongRamp(nnUNetTrainerSDM):
    """Ablation: the SDM head's pull on the shared network and the consistency ramp in over all the epochs.

    Tests the hypothesis that the live head, at full weight after 10 % of a short fine-tuning, pulls a
    converged model's features away from the segmentation before it has learned the distances.
    """

    ramp_fraction = 1.0


class nnUNetTrainerSDM_DetachedHead(nnUNetTrainerSDM):
    """Ablation: the SDM head learns on the shared features but never sends them a gradient; no consistency.

    Every gradient into the shared network and the segmentation rows is then stock's (tested; nnU-Net's
    gradient-norm clipping also sees the SDM rows), and the SDM head is there for SDM-guided inference
    alone: it measures what the predicted distances add at inference without changing what the
    segmentation learns. With seeded batches (``nnunet-sdm train --seed``, the accuracy benchmark) it sees
    stock's batches too; without them nnU-Net's augmentation workers draw their own seeds, and that alone
    moved LA 2018 results as much as this trainer did (the A/A check in docs/accuracy.md).
    """

    def distance_ramp(self) -> float:
        return 0.0
