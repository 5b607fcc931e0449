"""Distance-map penalised cross-entropy of Calivá et al., MIDL 2019 (eq. 2).

    L = 1/N sum_{i=1..N} (1 + Phi) ⊙ sum_{j=1..K} -y_j log(ŷ_j)                         (eq. 2)

i runs over the N voxels, j over the K classes (background included), y is the one-hot ground truth,
ŷ the softmax probabilities and ⊙ the voxel-wise (Hadamard) product.

How Phi enters for several classes: the paper builds ONE map Phi per image ("inner distance maps for
each bone were independently computed and subsequently combined", section 2) and multiplies it, voxel
by voxel, with the class-summed cross-entropy. With a one-hot y the inner sum has a single non-zero
term, so per voxel i

    (1 + Phi_i) * (-log ŷ_{i, y_i}),

i.e. the ordinary cross-entropy of the voxel's true class weighted by (1 + Phi_i); Phi is not indexed
by class. The "+1" keeps every voxel's weight >= 1 (the paper: it mitigates vanishing gradients), so
with Phi in [0, 1] (``nnunet_sdm.distance.caliva_penalty``) each voxel weighs 1 to 2.

The mean is over the counted voxels (all voxels of all samples; with a ``mask``, those with mask 1).
Unlike the "distance-penalised" cross-entropy of SegLossOdyssey, which returned the unweighted loss,
the weighting here is applied to the value that is returned (see tests/losses/test_distance_penalty.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _channel_first(x: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    """(B, *spatial) or (B, 1, *spatial) -> (B, *spatial)."""
    if x.ndim == ndim:
        if x.shape[1] != 1:
            raise ValueError(f"{name}: expected one channel, got shape {tuple(x.shape)}")
        return x[:, 0]
    if x.ndim == ndim - 1:
        return x
    raise ValueError(f"{name}: expected shape (B, *spatial) or (B, 1, *spatial), got {tuple(x.shape)}")


class DistancePenalisedCrossEntropy(nn.Module):
    """Eq. 2 of Calivá et al. 2019: voxel-wise cross-entropy weighted by (1 + Phi), averaged over voxels.

    ``forward(logits, labels, penalty, mask=None)``:

    - ``logits``: (B, C, *spatial) raw scores, C classes including background (softmax inside);
    - ``labels``: (B, *spatial) or (B, 1, *spatial) integer class indices in [0, C);
    - ``penalty``: Phi, (B, *spatial) or (B, 1, *spatial), one map for all classes (see module docstring),
      finite and >= 0 (``caliva_penalty`` gives values in [0, 1]);
    - ``mask``: optional, same layout as ``labels``, non-zero = counted; excluded voxels (e.g. nnU-Net's
      ignore label) contribute neither to the sum nor to the count, and their label may be out of range.

    Returns the scalar mean over counted voxels (0 if none is counted), computed in float32.
    """

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        penalty: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if logits.ndim < 3:
            raise ValueError(f"logits: expected shape (B, C, *spatial), got {tuple(logits.shape)}")
        spatial = (logits.shape[0], *logits.shape[2:])
        labels = _channel_first(labels, logits.ndim, "labels")
        penalty = _channel_first(penalty, logits.ndim, "penalty")
        for name, x in (("labels", labels), ("penalty", penalty)):
            if tuple(x.shape) != spatial:
                raise ValueError(f"{name}: shape {tuple(x.shape)} does not match the logits' {spatial}")
        if labels.is_floating_point():
            raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
        labels = labels.long()
        weight = 1.0 + penalty.detach().float()
        if mask is None:
            ce = F.cross_entropy(logits.float(), labels, reduction="none")
            return (weight * ce).mean()
        mask = _channel_first(mask, logits.ndim, "mask")
        if tuple(mask.shape) != spatial:
            raise ValueError(f"mask: shape {tuple(mask.shape)} does not match the logits' {spatial}")
        counted = mask != 0
        ce = F.cross_entropy(logits.float(), torch.where(counted, labels, 0), reduction="none")
        counted = counted.float()
        return (weight * ce * counted).sum() / counted.sum().clamp_min(1.0)


class DistancePenalisedBinaryCrossEntropy(nn.Module):
    """Eq. 2 of Calivá et al. 2019 for nnU-Net's region-based training: per region channel r, the binary
    cross-entropy of its sigmoid weighted by (1 + Phi_r), Phi_r the penalty map of region r alone
    (``caliva_penalty(..., per_class=True)`` / ``caliva_penalty_of_sdm``):

        L = 1/N sum_i sum_r (1 + Phi_{r,i}) BCE(z_{r,i}, y_{r,i}) / R            (no mask: mean over elements)
        L = sum_i m_i sum_r (1 + Phi_{r,i}) BCE(z_{r,i}, y_{r,i}) / sum_i m_i    (mask m, e.g. the ignore label)

    Regions overlap (BraTS's nested tumour regions), so there is no softmax over classes and one map per
    region replaces the paper's one map per image. Both reductions are nnU-Net's own for its BCE
    (``DC_and_BCE_loss``: the element mean, and with the ignore label the masked sum over regions and voxels
    divided by the counted voxels), so with Phi = 0 this is exactly stock's BCE term.

    ``forward(logits, targets, penalty, mask=None)``: logits (B, R, *spatial), targets of the same shape
    (bool or 0/1), penalty (B, R, *spatial) >= 0, mask (B, 1, *spatial) non-zero = counted. Float32.
    """

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        penalty: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for name, x in (("targets", targets), ("penalty", penalty)):
            if tuple(x.shape) != tuple(logits.shape):
                raise ValueError(
                    f"{name}: shape {tuple(x.shape)} does not match the logits' {tuple(logits.shape)}"
                )
        weight = 1.0 + penalty.detach().float()
        bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
        if mask is None:
            return (weight * bce).mean()
        if mask.ndim != logits.ndim or mask.shape[1] != 1 or mask.shape[2:] != logits.shape[2:]:
            raise ValueError(f"mask: expected shape (B, 1, *spatial), got {tuple(mask.shape)}")
        counted = (mask != 0).float()
        return (weight * bce * counted).sum() / counted.sum().clamp_min(1e-8)
