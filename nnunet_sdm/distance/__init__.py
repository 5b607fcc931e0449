"""Pure-math distance layer: exact signed distance maps, their normalisations, NI-DM and Calivá's Phi.

No nnU-Net import here.  Conventions (see ``signed``): units are mm with the spacing given per array
axis; SDMs are negative inside and positive outside, so ``sdm < 0`` gives back the mask exactly; a
class absent from the array is ``+D`` everywhere and a class filling it ``-D`` everywhere (``D`` = the
array's diagonal in mm); never inf or NaN.
"""

from .maps import caliva_penalty, caliva_penalty_of_sdm, ni_dm
from .normalise import normalise_xue, truncate
from .signed import (
    certified_signed_distance,
    label_masks,
    signed_distance,
    signed_distance_masks,
    truncated_signed_distance,
)

__all__ = [
    "certified_signed_distance",
    "label_masks",
    "signed_distance",
    "signed_distance_masks",
    "truncated_signed_distance",
    "normalise_xue",
    "truncate",
    "ni_dm",
    "caliva_penalty",
    "caliva_penalty_of_sdm",
]
