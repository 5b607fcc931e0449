"""Pure torch losses for distance-map training (no nnU-Net import)."""

from nnunet_sdm.losses.consistency import HeavisideConsistencyLoss
from nnunet_sdm.losses.deep_supervision import deep_supervision_weights, weighted_terms
from nnunet_sdm.losses.dice import SoftDiceLoss
from nnunet_sdm.losses.heaviside import XUE_STEEPNESS, heaviside
from nnunet_sdm.losses.regression import L1SDMLoss, L2SDMLoss, ProductSDMLoss
from nnunet_sdm.losses.sdm_head import SDMHeadTermsLoss
from nnunet_sdm.losses.shape_aware import XUE_LAMBDA, ShapeAwareSDMLoss

__all__ = [
    "XUE_LAMBDA",
    "XUE_STEEPNESS",
    "HeavisideConsistencyLoss",
    "L1SDMLoss",
    "L2SDMLoss",
    "ProductSDMLoss",
    "SDMHeadTermsLoss",
    "ShapeAwareSDMLoss",
    "SoftDiceLoss",
    "deep_supervision_weights",
    "heaviside",
    "weighted_terms",
]
