"""Boundary loss of Kervadec et al. (MIDL 2019; MedIA 2021) and its rebalancing schedule.

Kervadec et al. approximate the boundary distance between the ground truth G and the segmentation S
by a regional integral (section 2, eqs. 4-5 of the MedIA paper):

    Dist(∂G, ∂S) ≈ 2 ∫_{ΔS} D_G(q) dq = 2 ( ∫_Ω phi_G(q) s(q) dq - ∫_Ω phi_G(q) g(q) dq ),

with phi_G the signed distance map of G (negative inside), s the softmax probability and g the binary
ground truth. The paper drops the second integral (it does not depend on the network) and minimises
L_B = ∫_Ω phi_G s. That value is negative at the optimum and, for a class filling the patch (phi_G = -D
everywhere), an unbounded-looking "reward" -D * mean(s) that dominates the logged loss (reported in
the LIVIA/boundary-loss repository's issue tracker).

We keep the constant, per foreground class c, averaged over voxels:

    L_B = mean_x sum_c phi_c(x) (s_c(x) - g_c(x)) = mean_x sum_c |phi_c(x)| |s_c(x) - g_c(x)|,

with g_c = [phi_c < 0] read off the sign of phi (``signed_distance`` has no zeros). The gradient
d L_B / d s_c = phi_c / N is exactly Kervadec's; the value is >= 0, 0 exactly when s = g, and bounded
by mean sum_c |phi_c|. A class filling the patch (phi = -D, D the patch diagonal in mm) gives
D * mean(1 - s_c): the largest per-voxel weight, pulling s_c up, minimum 0 at the ground truth -- no
negative reward. An absent class (phi = +D) gives D * mean(s_c): every false positive costs the
maximal distance. phi is the raw SDM in mm at the scale's spacing (not normalised): L_B then is the
paper's boundary distance (in mm, up to the factor 2 and the voxel volume), so the same error costs
the same in every patch, whereas a per-patch normalisation would make it depend on the patch extent.

Rebalancing (MIDL 2019, section 3): L = alpha L_regional + (1 - alpha) L_B, alpha = 1 at the start,
decreased by 0.01 after every epoch down to 0.01 (``rebalance_alpha``).
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import check_integer, check_non_negative, check_number, check_same_shape


def rebalance_alpha(epoch: int, start: float = 1.0, step: float = 0.01, floor: float = 0.01) -> float:
    """Weight of the regional loss at ``epoch`` (0-based): max(floor, start - step * epoch)."""
    check_integer("epoch", epoch, minimum=0)
    check_alpha_schedule(start, step, floor)
    return max(float(floor), float(start) - float(step) * epoch)


def check_alpha_schedule(start: float, step: float, floor: float, prefix: str = "alpha_") -> None:
    """Raise ValueError naming the setting (``prefix`` + start/step/floor) unless 0 < start <= 1,
    step >= 0 and 0 <= floor <= start."""
    check_number(f"{prefix}start", start, minimum=0.0, maximum=1.0, above=True)
    check_non_negative(f"{prefix}step", step)
    check_number(f"{prefix}floor", floor, minimum=0.0, maximum=start)


class BoundaryLoss(nn.Module):
    """L_B = mean over voxels of sum_c phi_c (s_c - g_c), g_c = [phi_c < 0] (module docstring).

    ``forward(probabilities, phi, mask=None)``:

    - ``probabilities``: (B, K, *spatial) softmax probabilities of the K foreground classes;
    - ``phi``: (B, K, *spatial) signed distance maps of the classes' ground truth, negative inside, no
      zeros (``nnunet_sdm.distance.signed_distance``); a target, no gradient flows into it;
    - ``mask``: optional (B, 1, *spatial) (or (B, *spatial)), non-zero = counted; or (B, K, *spatial) per
      class (e.g. the certified voxels of each class under nnU-Net's ignore label): the mean is then over
      the voxels where any class counts.

    Returns the scalar mean over the counted voxels (0 if none), float32.
    """

    def forward(
        self, probabilities: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_same_shape("BoundaryLoss(probabilities, phi)", probabilities, phi)
        phi = phi.detach().float()
        inside = (phi < 0).float()
        per_class = phi * (probabilities.float() - inside)  # (B, K, *spatial)
        if mask is None:
            return per_class.sum(1).mean()
        if mask.ndim == per_class.ndim - 1:
            mask = mask[:, None]
        if mask.ndim != per_class.ndim or mask.shape[1] not in (1, per_class.shape[1]):
            raise ValueError(
                f"BoundaryLoss: mask must have shape (B, 1 or K, *spatial), got {tuple(mask.shape)} "
                f"for probabilities {tuple(probabilities.shape)}"
            )
        check_same_shape("BoundaryLoss(mask, voxels)", mask[:, 0], per_class[:, 0])
        counted = (mask != 0).expand_as(per_class)
        # a voxel counts once if any of its classes does; a class counts there only where its mask says
        voxels = counted.any(1).float()
        return (per_class * counted.float()).sum() / voxels.sum().clamp_min(1.0)
