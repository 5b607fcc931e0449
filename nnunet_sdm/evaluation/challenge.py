"""FLARE22, FLARE23 and FLARE24 organ scoring rules (``nnunet-sdm evaluate --scoring flare22|23|24``).

The challenges' official evaluation scripts (FLARE22 ``FLARE22_DSC_NSD_Eval.py``, FLARE23
``FLARE23_DSC_NSD_Eval.py``, FLARE24 tasks 2 and 3 ``T2andT3_FLARE24_DSC_NSD_Eval.py``) score every case
and organ label by DSC and NSD with the DeepMind surface distances (ours, :mod:`.surface`) and these rules:

- **per-organ NSD tolerance** (mm), by label value: 1 liver 5, 2 right kidney 3, 3 spleen 3, 4 pancreas 5,
  5 aorta 2, 6 inferior vena cava 2, 7 right adrenal gland 2, 8 left adrenal gland 2, 9 gallbladder 2,
  10 esophagus 3, 11 stomach 5, 12 duodenum 7, 13 left kidney 3; FLARE23 also 14 tumour 2;
- **aorta, IVC and esophagus (5, 6, 10)** are scored on the reference's labelled axial slices only: from
  the first to the last axial slice that holds the label, the last one excluded (the scripts slice
  ``[z_lower:z_upper]`` with ``z_upper`` the last labelled index; we keep that, to give their numbers);
- **empty masks**: both empty, DSC = NSD = 1; exactly one empty, DSC = NSD = 0;
- **NSD set to 0 when DSC is low**: FLARE23 below 0.1, FLARE24 below 0.2; FLARE22 has no such rule;
- **rounding**: DSC and NSD of every case and organ rounded to 4 decimals (Python's ``round``).

FLARE21's definitions (4 organs, NSD at 1 mm, no rounding) are the default ``evaluate`` with
``--tolerance 1``. The axial axis is numpy axis 0 of a SimpleITK array (nibabel's axis 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnunet_sdm.evaluation.surface import nsd_key, surface_metrics

__all__ = ["CHALLENGE_SCORINGS", "ChallengeScoring", "challenge_metrics", "get_scoring"]

_ORGANS = {
    1: ("liver", 5.0),
    2: ("right kidney", 3.0),
    3: ("spleen", 3.0),
    4: ("pancreas", 5.0),
    5: ("aorta", 2.0),
    6: ("inferior vena cava", 2.0),
    7: ("right adrenal gland", 2.0),
    8: ("left adrenal gland", 2.0),
    9: ("gallbladder", 2.0),
    10: ("esophagus", 3.0),
    11: ("stomach", 5.0),
    12: ("duodenum", 7.0),
    13: ("left kidney", 3.0),
}
_LABELLED_SLICES_ONLY = frozenset({5, 6, 10})


@dataclass(frozen=True)
class ChallengeScoring:
    """One challenge's DSC / NSD rules (see the module docstring)."""

    name: str
    #: label value -> (organ name, NSD tolerance in mm)
    organs: dict[int, tuple[str, float]]
    #: NSD is 0 where DSC is below this (None: no such rule)
    nsd_zero_below_dice: float | None
    labelled_slices_only: frozenset[int] = field(default=_LABELLED_SLICES_ONLY)
    decimals: int = 4

    @property
    def labels(self) -> list[int]:
        return sorted(self.organs)


CHALLENGE_SCORINGS: dict[str, ChallengeScoring] = {
    "flare22": ChallengeScoring("flare22", dict(_ORGANS), nsd_zero_below_dice=None),
    "flare23": ChallengeScoring("flare23", {**_ORGANS, 14: ("tumour", 2.0)}, nsd_zero_below_dice=0.1),
    "flare24": ChallengeScoring("flare24", dict(_ORGANS), nsd_zero_below_dice=0.2),
}


def get_scoring(name: str) -> ChallengeScoring:
    """The scoring rules called ``name`` (``flare22``, ``flare23``, ``flare24``)."""
    if name not in CHALLENGE_SCORINGS:
        raise ValueError(f"scoring must be one of {tuple(CHALLENGE_SCORINGS)}, got {name!r}")
    return CHALLENGE_SCORINGS[name]


def _labelled_slab(mask_gt: np.ndarray) -> slice:
    """The reference's labelled axial slices, the last one excluded (as the official scripts); a label on
    one slice keeps that slice (the scripts would score an empty slab, NaN)."""
    z = np.flatnonzero(mask_gt.reshape(mask_gt.shape[0], -1).any(axis=1))
    return slice(int(z.min()), max(int(z.max()), int(z.min()) + 1))


def challenge_metrics(
    gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], label: int, scoring: ChallengeScoring
) -> dict[str, float]:
    """DSC and NSD of one label by the challenge's rules (``Dice``, ``NSD``, ``NSD_tolerance_mm``), and the
    label's voxel counts in the whole reference and prediction (``n_ref``, ``n_pred``)."""
    if label not in scoring.organs:
        raise ValueError(
            f"{scoring.name} scores labels {scoring.labels}; label {label} is not one of its organs"
        )
    tolerance = scoring.organs[label][1]
    mask_gt, mask_pred = gt == label, pred == label
    counts = {"n_ref": int(np.count_nonzero(mask_gt)), "n_pred": int(np.count_nonzero(mask_pred))}
    if counts["n_ref"] == 0 or counts["n_pred"] == 0:
        value = 1.0 if counts["n_ref"] == counts["n_pred"] else 0.0
        return {"Dice": value, "NSD": value, "NSD_tolerance_mm": tolerance, **counts}
    if label in scoring.labelled_slices_only:
        slab = _labelled_slab(mask_gt)
        mask_gt, mask_pred = mask_gt[slab], mask_pred[slab]
    values = surface_metrics(mask_gt, mask_pred, spacing, tolerances=(tolerance,))
    dice = values["Dice"]
    nsd = values[nsd_key(tolerance)]
    if scoring.nsd_zero_below_dice is not None and dice < scoring.nsd_zero_below_dice:
        nsd = 0.0
    return {
        "Dice": round(float(dice), scoring.decimals),
        "NSD": round(float(nsd), scoring.decimals),
        "NSD_tolerance_mm": tolerance,
        **counts,
    }
