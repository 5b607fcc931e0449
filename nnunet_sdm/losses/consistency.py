"""Dual-task consistency between a segmentation head and an SDM head (Luo et al., AAAI 2021, eq. 4).

    L_consistency = mean over batch, classes and voxels of ( q_c - H_k(p_c) )^2

q_c is the segmentation head's probability of foreground class c (softmax over background and classes),
p_c the SDM head's prediction for class c (negative inside) and H_k(z) = sigmoid(-k z) the Heaviside of
Xue et al. 2020 (eq. 3, sign corrected; :func:`~nnunet_sdm.losses.heaviside.heaviside`), which turns
the SDM into a soft mask. Luo et al. use k = 1500 on SDMs normalised per patch; with a smaller k the
term also moves the SDM head near its zero level set, not only the segmentation head. Gradients flow
into both heads.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import check_positive, check_same_shape
from nnunet_sdm.losses.heaviside import heaviside


class HeavisideConsistencyLoss(nn.Module):
    """Mean squared difference between foreground probabilities and the Heaviside of the SDMs.

    ``forward(foreground_probabilities, pred_sdm, k)`` takes two tensors of shape (B, C, *spatial)
    (C foreground classes) and the Heaviside steepness ``k`` (> 0; it may differ per call, e.g. per
    deep-supervision scale).
    """

    def forward(
        self, foreground_probabilities: torch.Tensor, pred_sdm: torch.Tensor, k: float
    ) -> torch.Tensor:
        check_same_shape("HeavisideConsistencyLoss(probabilities, sdm)", foreground_probabilities, pred_sdm)
        k = check_positive("k", k)
        return (foreground_probabilities.float() - heaviside(pred_sdm, k)).square().mean()
