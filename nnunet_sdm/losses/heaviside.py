"""Differentiable Heaviside coupling between an SDM and a segmentation (Xue et al. 2020, eq. 3).

Eq. 3 is printed as f(z) = 1 / (1 + exp(-z / k)); with the paper's convention (SDM negative inside)
and "larger k means closer approximation" the intended function is

    H_k(z) = 1 / (1 + exp(k z)) = sigmoid(-k z),

which is 1 inside the object (z < 0), 0 outside, and steeper as k grows (k = 1500 for SDMs
normalised to [-1, 1]).
"""

from __future__ import annotations

import torch

from nnunet_sdm.checks import check_positive

XUE_STEEPNESS = 1500.0


def heaviside(sdm: torch.Tensor, k: float = XUE_STEEPNESS) -> torch.Tensor:
    """Soft foreground probability sigmoid(-k * sdm) of a signed distance map (negative inside)."""
    k = check_positive("k", k)
    return torch.sigmoid(-k * sdm.float())
