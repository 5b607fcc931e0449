"""SDM-guided post-processing: remove predicted components that the SDM head places outside.

The flagship's SDM head is trained on the truncated SDM (``clamp(sdm_mm / tau, -1, 1)``), and the Heaviside
consistency couples it to the segmentation head. A stray blob that the segmentation head predicts but that
the SDM head does not see as inside has a predicted SDM that never gets clearly negative within it. Rule,
per foreground class ``c`` and predicted connected component ``C`` of ``c`` (26-connectivity in 3D, 8 in 2D):

    keep C  iff  min_{x in C} sdm_c(x) <= -depth_mm / tau

i.e. the SDM head places some voxel of the component at least ``depth_mm`` inside class ``c``; removed
components become background (0), as nnU-Net's own "keep the largest component" post-processing does.
``depth_mm = 0`` keeps every component that has one voxel with a negative SDM. A class is never emptied:
when the rule would remove all its components, the one with the lowest SDM is kept (an SDM head that
places the whole structure outside is wrong about the structure, not evidence that there is none; like
nnU-Net's keep-the-largest-component, the rule only removes extra components). Which ``depth_mm`` (and
whether to use the rule at all) is chosen on validation folds, never on test cases.

Works on what ``nnunet-sdm predict --save-sdm`` writes (``nnunet_sdm.sdm_format``): a label map per case and
its SDM image, for trainers with truncated targets (``truncation_mm`` in ``sdm.json``); label datasets only
(regions are nested masks, not one label per voxel).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage

from nnunet_sdm.checks import check_non_negative
from nnunet_sdm.sdm_format import SDM_FOLDER, SDM_INFO, read_sdm, sdm_path

__all__ = ["SDMGuidedError", "apply_to_folder", "has_truncated_sdm", "remove_components_outside_sdm"]


class SDMGuidedError(ValueError):
    """Inputs that SDM-guided post-processing cannot use (names the file or setting)."""


def has_truncated_sdm(trainer_class: type) -> bool:
    """Whether ``trainer_class`` predicts a truncated SDM (an SDM head and ``truncation_mm``): the SDMs
    whose values are depths in mm, which the rule needs."""
    return bool(getattr(trainer_class, "has_sdm_head", False)) and (
        getattr(trainer_class, "truncation_mm", None) is not None
    )


def remove_components_outside_sdm(
    labels: np.ndarray,
    sdm: np.ndarray,
    classes: Sequence[int],
    threshold: float,
) -> tuple[np.ndarray, dict[int, int]]:
    """Remove each connected component of each class whose SDM never reaches ``threshold`` inside it.

    Args:
        labels: integer label map ``(*spatial)``, 2D or 3D.
        sdm: float ``(len(classes), *spatial)``, the predicted SDM of each class (negative inside).
        classes: the label value of each SDM channel.
        threshold: a component of class ``c`` is kept iff ``min(sdm_c)`` over it is ``<= threshold``
            (``-depth_mm / tau`` for truncated SDMs), or it is the class's component with the lowest
            ``min(sdm_c)`` and no other is kept.

    Returns:
        the filtered label map (a copy) and ``{class: components removed}``.
    """
    if sdm.ndim != labels.ndim + 1 or sdm.shape[1:] != labels.shape or sdm.shape[0] != len(classes):
        raise SDMGuidedError(
            f"sdm of shape {sdm.shape} does not hold one map of the label map's shape {labels.shape} per class "
            f"{list(classes)}"
        )
    connectivity = 26 if labels.ndim == 3 else 8
    out = labels.copy()
    removed: dict[int, int] = {}
    for channel, label in enumerate(classes):
        mask = labels == label
        if not mask.any():
            removed[int(label)] = 0
            continue
        components, count = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
        minima = np.asarray(ndimage.minimum(sdm[channel], components, index=np.arange(1, count + 1)))
        outside = np.flatnonzero(minima > threshold) + 1
        if outside.size == count:  # never empty a class: keep the component the SDM places deepest
            outside = outside[outside != int(np.argmin(minima)) + 1]
        if outside.size:
            out[np.isin(components, outside)] = 0
        removed[int(label)] = int(outside.size)
    return out, removed


def apply_to_folder(pred_dir: str | Path, out_dir: str | Path, depth_mm: float) -> dict[str, dict[int, int]]:
    """Apply :func:`remove_components_outside_sdm` to every case of a ``nnunet-sdm predict --save-sdm`` folder.

    Writes each filtered label map to ``out_dir`` (same name and geometry) and ``out_dir/sdm_guided.json``
    (the rule, its setting and the components removed per case and class). Returns the removals.
    """
    import SimpleITK as sitk

    depth_mm = check_non_negative("depth_mm", depth_mm)
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    info_file = pred_dir / SDM_FOLDER / SDM_INFO
    if not info_file.is_file():
        raise SDMGuidedError(f"{info_file}: missing; predict with `nnunet-sdm predict --save-sdm` first")
    info = json.loads(info_file.read_text())
    tau = info.get("truncation_mm")
    if tau is None:
        raise SDMGuidedError(
            f"{info_file}: trainer {info.get('trainer')} predicts per-patch normalised SDMs (no truncation_mm), "
            "which have no depth in mm; SDM-guided post-processing needs a trainer with truncated targets "
            "(e.g. nnUNetTrainerSDM)"
        )
    ending = info["files"].split("<case>_sdm", 1)[1].split(":", 1)[0]
    cases = sorted(p for p in pred_dir.iterdir() if p.is_file() and p.name.endswith(ending))
    if not cases:
        raise SDMGuidedError(f"{pred_dir}: no *{ending} predictions")
    if out_dir.resolve() == pred_dir.resolve():
        raise SDMGuidedError(f"{out_dir}: write the filtered predictions to another folder than {pred_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    removals: dict[str, dict[int, int]] = {}
    for case in cases:
        sdm_file = sdm_path(pred_dir / case.name[: -len(ending)], ending)
        if not sdm_file.is_file():
            raise SDMGuidedError(f"case {case.name}: no SDM at {sdm_file}")
        image = sitk.ReadImage(str(case))
        labels = sitk.GetArrayFromImage(image)
        sdm = np.stack([read_sdm(sdm_file, c)[0] for c in info["classes"]])
        filtered, removed = remove_components_outside_sdm(labels, sdm, info["classes"], -depth_mm / tau)
        written = sitk.GetImageFromArray(filtered)
        written.CopyInformation(image)
        sitk.WriteImage(written, str(out_dir / case.name), useCompression=True)
        removals[case.name] = removed
    record = {
        "rule": "remove components whose predicted SDM never reaches -depth_mm inside them",
        "depth_mm": depth_mm,
        "truncation_mm": tau,
        "source": str(pred_dir),
        "removed": removals,
    }
    (out_dir / "sdm_guided.json").write_text(json.dumps(record, indent=2))
    return removals
