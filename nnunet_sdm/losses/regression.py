"""SDM regression losses: L1 (Park et al. 2019), L2 (Wang & Zhang 2021), product (Xue et al. 2020, eq. 4).

All take a predicted and a target SDM of shape (B, C, *spatial), compute the per-voxel term, average
it over batch and voxels for each class and sum over the C classes, following the sum over classes
t in eq. 4 (for one class this is the plain mean). An optional ``mask`` (B, 1, *spatial) of 0/1
excludes voxels from the mean.

Product loss, eq. 4:  L_product = - sum_t  y_t p_t / (y_t p_t + p_t^2 + y_t^2).
Eq. 4 can be read per voxel (the ratio at every voxel, then averaged) or as a ratio of sums over
the volume. We take the per-voxel ratio: it is what the paper's Fig. 3(b) plots (the loss as a
function of one predicted value for one target value) and what its argument needs (larger gradients
near the zero level set): the ratio depends only on p / y, so its gradient in p scales with 1 / |y|
and grows towards the boundary, whereas a ratio of volume sums weighs every voxel alike. The ratio
lies in [-1, 1/3]: 1/3 when p = y, negative when the signs differ. The denominator equals
(p + y/2)^2 + 3 y^2 / 4 >= 0 and vanishes only at p = y = 0; ``eps`` keeps that point finite.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import check_positive, check_same_shape


def _per_class_mean(per_voxel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over batch and voxels for each class, summed over classes."""
    axes = (0, *range(2, per_voxel.ndim))
    if mask is None:
        return per_voxel.mean(axes).sum()
    mask = mask.to(per_voxel.dtype).expand_as(per_voxel)
    return ((per_voxel * mask).sum(axes) / mask.sum(axes).clamp_min(1.0)).sum()


class SDMRegressionLoss(nn.Module):
    """Base of the per-voxel SDM losses: checks shapes, computes in float32."""

    def per_voxel(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_same_shape(f"{type(self).__name__}(prediction, target)", prediction, target)
        return _per_class_mean(self.per_voxel(prediction.float(), target.float()), mask)


class L1SDMLoss(SDMRegressionLoss):
    """|p - y| (the L1 SDM loss of Park et al. 2019 used by Xue et al. 2020, eq. 5)."""

    def per_voxel(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).abs()


class L2SDMLoss(SDMRegressionLoss):
    """(p - y)^2 (the L2 SDM-head loss of Wang & Zhang, FLARE 2021)."""

    def per_voxel(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction - target).square()


class ProductSDMLoss(SDMRegressionLoss):
    """-y p / (y p + p^2 + y^2), per voxel (Xue et al. 2020, eq. 4; see the module docstring)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = check_positive("eps", eps)

    def per_voxel(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        product = prediction * target
        return -product / (product + prediction.square() + target.square() + self.eps)
