"""Distance-derived target and penalty maps: Li et al.'s NI-DM and Calivá et al.'s penalty map Phi.

Both have the backends of ``signed_distance``; with ``backend="auto"`` numpy arrays and CPU tensors use
``edt`` and a tensor on an accelerator stays there (exact torch EDT).  NI-DM also needs the connected
components, which ``cc3d`` labels on the CPU: on the torch path only the labels go to the host and the
component ids come back; distances and per-component maxima are computed on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
import torch

from nnunet_sdm.checks import check_positive

from ._common import (
    ArrayLike,
    as_numpy,
    batched_flag,
    check_array,
    check_backend,
    check_classes,
    check_spacing,
    check_spatial_shape,
    is_integer_or_bool,
)
from .signed import signed_distance

__all__ = ["ni_dm", "caliva_penalty", "caliva_penalty_of_sdm"]

_CONNECTIVITIES = {2: (4, 8), 3: (6, 18, 26)}


def _check_inputs(
    labels: ArrayLike, spacing: Sequence[float], classes: Sequence[int]
) -> tuple[bool, tuple[float, ...], tuple[int, ...]]:
    """Shared argument checks; returns (batched, spacing, classes)."""
    check_array(labels, "labels")
    spacing_t = check_spacing(spacing)
    classes_t = check_classes(classes)
    if not is_integer_or_bool(labels):
        raise ValueError(f"labels must have an integer or bool dtype (a label map), got {labels.dtype}")
    batched = batched_flag(labels, "labels", len(spacing_t), "(*spatial)", f"a {len(spacing_t)}-D spacing")
    check_spatial_shape(tuple(labels.shape[1:] if batched else labels.shape), "labels")
    return batched, spacing_t, classes_t


def _uses_torch(labels: ArrayLike, backend: str) -> bool:
    on_device = isinstance(labels, torch.Tensor) and labels.device.type != "cpu"
    return backend == "torch" or (backend == "auto" and on_device)


def _batched_tensor(labels: ArrayLike, batched: bool) -> torch.Tensor:
    tensor = torch.as_tensor(labels)
    return tensor if batched else tensor[None]


def _like_input(out: torch.Tensor, labels: ArrayLike, batched: bool) -> ArrayLike:
    """A batched torch result in the container (and batching) of ``labels``."""
    out = out if batched else out[0]
    return out if isinstance(labels, torch.Tensor) else out.numpy()


def _batched_numpy(labels: ArrayLike, batched: bool):
    """``labels`` as batched numpy and a function that converts a numpy result back to their container."""
    lab, back = as_numpy(labels)
    return (lab if batched else lab[None]), back


def _class_codes(lab: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """``k + 1`` where ``lab == classes[k]``, 0 elsewhere (the input of one multi-label cc3d pass)."""
    codes = np.zeros(lab.shape, dtype=np.uint16 if len(classes) < 65535 else np.uint32)
    for k, value in enumerate(classes):
        codes[lab == value] = k + 1
    return codes


def _ni_dm_torch(
    labels: torch.Tensor,
    spacing: tuple[float, ...],
    classes: tuple[int, ...],
    connectivity: int,
    offset: float,
) -> torch.Tensor:
    """NI-DM of batched ``(B, *spatial)`` labels on their device; components from cc3d on the host."""
    lab_host = labels.detach().cpu().numpy()
    components = np.zeros(lab_host.shape, dtype=np.int64)
    n_total = 0
    for b in range(lab_host.shape[0]):  # ids unique over the batch: one scatter for all members
        comp, n = cc3d.connected_components(
            _class_codes(lab_host[b], classes), connectivity=connectivity, return_N=True
        )
        components[b] = np.where(comp > 0, comp.astype(np.int64) + n_total, 0)
        n_total += n
    components_t = torch.from_numpy(components).to(labels.device)
    sdm = signed_distance(labels, spacing, classes, backend="torch")  # (B, K, *spatial)
    inside = sdm < 0
    depth = torch.where(inside, -sdm, 0.0).sum(dim=1)  # D(x) of the voxel's own class (classes disjoint)
    comp_max = torch.zeros(n_total + 1, dtype=depth.dtype, device=depth.device)
    comp_max.scatter_reduce_(0, components_t.flatten(), depth.flatten(), reduce="amax")
    m = comp_max[components_t]
    phi = torch.where(components_t > 0, (m + offset - depth) / torch.where(m > 0, m, 1.0), 0.0)
    out = torch.where(inside, phi.unsqueeze(1), 0.0)
    filled = inside.flatten(2).all(dim=-1).view(inside.shape[:2] + (1,) * (inside.ndim - 2))
    out = torch.where(filled, 1.0, out)  # no boundary in the array
    return out.clamp_(0.0, 1.0)


def ni_dm(
    labels: ArrayLike,
    spacing: Sequence[float],
    classes: Sequence[int],
    *,
    connectivity: int | None = None,
    offset: float | None = None,
    backend: str = "auto",
) -> ArrayLike:
    """Normalised inverse distance map (NI-DM) of Li et al., eq. 1, per class and connected component.

    Li et al. define, for a binary mask, the original distance map ``D(x) = min_{b in B} d(x, b)`` and
    then: "each connected component C of O-DM is subtracted by its local maximum distance value plus 1
    for inverse and, then divided by the local maximum distance for normalization", i.e. (eq. 1, whose
    typeset form is garbled) ``phi(x) = (max_{y in C} D(y) + 1 - D(x)) / max_{y in C} D(y)`` for ``x`` in
    ``C``.  Implemented per class ``c`` and per connected component ``C`` of ``labels == c`` as::

        phi(x) = (M_C + offset - D(x)) / M_C    for x in C,      M_C = max_{y in C} D(y)
        phi(x) = 0                              for x not in the class

    * ``D(x)`` is the inside distance in mm from the voxel centre to the nearest voxel centre not in the
      class (= ``-signed_distance``), so boundary voxels have ``D >= min(spacing)``.
    * ``offset`` is the paper's "+1".  The paper works on a unit voxel grid, where 1 is one voxel; with
      spacing in mm the default is ``offset = min(spacing)`` (one voxel), which equals 1 at unit spacing
      and keeps the paper's range: ``phi = 1`` exactly at voxels with ``D = min(spacing)`` and the whole
      class lies in ``(0, 1]`` (the deepest voxel of ``C`` gets ``offset / M_C``).  A 1-voxel-thin
      component is 1 throughout.
    * No boundary: a class filling the whole array has no finite ``D``; it is set to 1 everywhere (the
      value a boundary voxel would get).  An absent class is 0 everywhere.

    Args:
        labels: integer label map, numpy or torch, ``(*spatial)`` or batched ``(B, *spatial)``.
        spacing: mm per spatial array axis, 2 or 3 positive numbers.
        classes: distinct label values, one output channel each.
        connectivity: component connectivity, 3D 6/18/26, 2D 4/8; default full (26 / 8).
        offset: the "+1" of eq. 1 in mm, finite and > 0; default ``min(spacing)``.
        backend: ``"auto"``, ``"edt"`` or ``"torch"`` (module docstring).

    Returns:
        float32 in [0, 1], shape ``(len(classes), *spatial)`` or ``(B, len(classes), *spatial)``, same
        container (and device) as ``labels``.  (Clipped to [0, 1]; this only bites for an ``offset``
        larger than ``min(spacing)``, where boundary voxels would exceed 1.)
    """
    check_backend(backend)
    batched, spacing_t, classes_t = _check_inputs(labels, spacing, classes)
    nd = len(spacing_t)
    if connectivity is None:
        connectivity = _CONNECTIVITIES[nd][-1]
    if connectivity not in _CONNECTIVITIES[nd]:
        raise ValueError(f"connectivity must be one of {_CONNECTIVITIES[nd]} for {nd}D, got {connectivity!r}")
    if offset is None:
        offset = min(spacing_t)
    check_positive("offset (mm)", offset)
    if _uses_torch(labels, backend):
        lab_t = _batched_tensor(labels, batched)
        return _like_input(_ni_dm_torch(lab_t, spacing_t, classes_t, connectivity, offset), labels, batched)

    lab, back = _batched_numpy(labels, batched)
    sdm = signed_distance(lab, spacing_t, classes_t, backend="edt")  # (B, K, *spatial)
    out = np.zeros(sdm.shape, dtype=np.float32)
    for b in range(lab.shape[0]):
        inside = sdm[b] < 0  # (K, *spatial), classes are disjoint
        codes = _class_codes(lab[b], classes_t)
        depth = np.zeros(lab.shape[1:], dtype=np.float32)  # D(x) of the voxel's own class
        for k in range(len(classes_t)):
            np.negative(sdm[b, k], out=depth, where=inside[k])
        # one pass labels the components of all classes (different codes are never connected)
        components, n = cc3d.connected_components(codes, connectivity=connectivity, return_N=True)
        fg = components > 0
        comp_ids = components[fg]
        comp_max = np.zeros(n + 1, dtype=np.float32)
        np.maximum.at(comp_max, comp_ids, depth[fg])
        m = comp_max[comp_ids]
        phi = np.zeros(lab.shape[1:], dtype=np.float32)
        phi[fg] = (m + np.float32(offset) - depth[fg]) / m
        for k in range(len(classes_t)):
            if inside[k].all():  # no boundary in the array
                out[b, k] = 1.0
            else:
                np.copyto(out[b, k], phi, where=inside[k])
    np.clip(out, 0.0, 1.0, out=out)
    return back(out if batched else out[0])


def _inverted(dist: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Calivá's inversion of a distance map on ``region``, min-max normalised to [0, 1].

    ``(M - D) / (M - m)`` on ``region`` with ``M``/``m`` the largest/smallest ``D`` there, 0 elsewhere;
    ``M == m`` (every voxel equally close to the boundary, e.g. a 1-voxel-thin structure) gives 1 on the
    region.  The caller handles "no boundary".
    """
    out = np.zeros(dist.shape, dtype=np.float32)
    if not region.any():
        return out
    d = dist[region]
    hi, lo = d.max(), d.min()
    out[region] = 1.0 if hi == lo else (hi - d) / (hi - lo)
    return out


def _inverted_torch(dist: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``_inverted`` for every ``(b, c)`` channel of ``(B, C, *spatial)`` tensors at once."""
    flat_d, flat_r = dist.flatten(2), region.flatten(2)
    view = tuple(dist.shape[:2]) + (1,) * (dist.ndim - 2)
    hi = torch.where(flat_r, flat_d, -torch.inf).amax(-1).view(view)
    lo = torch.where(flat_r, flat_d, torch.inf).amin(-1).view(view)
    span = hi - lo
    # span == 0: all voxels equally far -> 1; span -inf: empty region, masked to 0 below
    value = torch.where(span > 0, (hi - dist) / torch.where(span > 0, span, 1.0), 1.0)
    return torch.where(region, value, 0.0)


def _caliva_penalty_torch(
    sdm: torch.Tensor, per_class: bool, certified: torch.Tensor | None = None
) -> torch.Tensor:
    """Phi from ``(B, K, *spatial)`` SDMs on their device; the same rules as the numpy path.

    ``certified`` (bool, like ``sdm``): only these voxels belong to a part (its min-max normalisation and
    its Phi); the others get Phi = 0. The outside part of the one-map Phi needs every class certified."""
    inside = sdm < 0
    spatial_dims = tuple(range(2, sdm.ndim))
    present = inside.any(dim=spatial_dims, keepdim=True)  # (B, K, 1...)
    has_boundary = ~inside.all(dim=spatial_dims, keepdim=True)
    ok = torch.ones_like(inside) if certified is None else certified.expand_as(inside)
    inside_part = _inverted_torch(-sdm, inside & has_boundary & ok)
    if per_class:
        out = inside_part + _inverted_torch(sdm, ~inside & present & ok)
    else:
        union = inside.any(dim=1, keepdim=True)
        any_present = present.any(dim=1, keepdim=True)
        all_ok = ok.all(dim=1, keepdim=True)
        outside = _inverted_torch(sdm.amin(dim=1, keepdim=True), ~union & any_present & all_ok)
        out = inside_part.sum(dim=1, keepdim=True) + outside
    return out.clamp_(0.0, 1.0)


def caliva_penalty_of_sdm(
    sdm: torch.Tensor, *, per_class: bool = False, certified: torch.Tensor | None = None
) -> torch.Tensor:
    """``caliva_penalty`` from SDMs already computed (``(B, K, *spatial)`` tensor in mm, any device).

    With ``certified`` (bool, same shape; ``certified_signed_distance`` under nnU-Net's ignore label) only
    the certified voxels form the parts that are min-max normalised; the others get Phi = 0 (the plain,
    unpenalised cross-entropy weight 1), so unknown labels never shape the penalty.

    Returns:
        float32 in [0, 1], ``(B, 1, *spatial)`` (``(B, K, *spatial)`` if ``per_class``).
    """
    if not isinstance(sdm, torch.Tensor) or sdm.ndim not in (4, 5) or not sdm.is_floating_point():
        raise ValueError("sdm must be a float (B, K, *spatial) torch tensor with 2 or 3 spatial axes")
    if certified is not None and (certified.dtype != torch.bool or certified.shape != sdm.shape):
        raise ValueError(f"certified must be a bool tensor of the sdm's shape {tuple(sdm.shape)}")
    return _caliva_penalty_torch(sdm.float(), per_class, certified)


def caliva_penalty(
    labels: ArrayLike,
    spacing: Sequence[float],
    classes: Sequence[int],
    *,
    per_class: bool = False,
    backend: str = "auto",
) -> ArrayLike:
    """Distance-map penalty ``Phi`` of Calivá et al. 2019 (section 2, used as ``(1 + Phi)`` in eq. 2).

    The paper computes the distance transform of the ground truth, "reverts" it by subtracting it from
    its maximum (so voxels near the boundary weigh most), does the same on the negated mask for the
    inside, and computes the inside maps "for each bone independently" before combining them.  Here,
    with distances in mm between voxel centres (``signed_distance``; boundary voxels are at
    ``min(spacing)`` or more, not 0) and each part min-max normalised to [0, 1] (as in the reference
    implementation ``compute_edts_forPenalizedLoss`` of Ma et al.'s SegLoss, ``(M - D) / (M - m)``)::

        Phi(x) = (M_out - D_out(x)) / (M_out - m_out)   for x outside every class in ``classes``
        Phi(x) = (M_c - D_c(x)) / (M_c - m_c)           for x in class c (per class, independently)

    ``D_out`` is the distance to the nearest voxel of ANY listed class, ``D_c`` the distance from a voxel
    of class ``c`` to the nearest voxel not in ``c``; ``M``/``m`` are the largest/smallest such distance
    over the part.  So ``Phi`` is 1 on the voxels next to a boundary (inside and outside), 0 on the
    farthest voxel of each part, and in [0, 1] everywhere (one map for all classes, as in eq. 2).  Edge
    rules: a part whose voxels are all equally far (``M == m``, e.g. a 1-voxel-thin class) is 1; a part
    with no boundary in the array (no listed class present: the outside; a class filling the array: its
    inside) is 0, i.e. no extra penalty.  Pass the foreground classes (not the background label):
    voxels whose label is not listed form the outside part.

    Args:
        labels: integer label map, numpy or torch, ``(*spatial)`` or batched ``(B, *spatial)``.
        spacing: mm per spatial array axis, 2 or 3 positive numbers.
        classes: distinct (foreground) label values.
        per_class: if True, return one map per class instead: inside part of class ``c`` plus the
            outside part computed w.r.t. class ``c`` alone (distance to the nearest voxel of ``c``).
        backend: ``"auto"``, ``"edt"`` or ``"torch"`` as in ``signed_distance``: ``"auto"`` keeps a
            tensor on an accelerator on its device (exact torch EDT, no copy to the host).

    Returns:
        float32 in [0, 1], shape ``(1, *spatial)`` (``(len(classes), *spatial)`` if ``per_class``), with a
        leading ``B`` axis if ``labels`` is batched; same container (and device) as ``labels``.
    """
    check_backend(backend)
    batched, spacing_t, classes_t = _check_inputs(labels, spacing, classes)
    if not isinstance(per_class, bool):
        raise ValueError(f"per_class must be a bool, got {per_class!r}")
    if _uses_torch(labels, backend):
        sdm_t = signed_distance(_batched_tensor(labels, batched), spacing_t, classes_t, backend="torch")
        return _like_input(_caliva_penalty_torch(sdm_t, per_class), labels, batched)
    lab, back = _batched_numpy(labels, batched)
    sdm = signed_distance(lab, spacing_t, classes_t, backend="edt")  # (B, K, *spatial), |sdm| <= D
    n_out = len(classes_t) if per_class else 1
    out = np.zeros((lab.shape[0], n_out) + lab.shape[1:], dtype=np.float32)
    for b in range(lab.shape[0]):
        inside = sdm[b] < 0
        present = inside.reshape(len(classes_t), -1).any(axis=1)
        inside_part = np.zeros(lab.shape[1:], dtype=np.float32) if not per_class else None
        for k in range(len(classes_t)):
            part = _inverted(-sdm[b, k], inside[k]) if not inside[k].all() else np.zeros_like(out[b, 0])
            if per_class:
                outside = _inverted(sdm[b, k], ~inside[k]) if present[k] else 0.0
                out[b, k] = part + outside
            else:
                inside_part += part
        if not per_class:
            union = inside.any(axis=0)
            # distance to the nearest voxel of any listed class = min over classes of the outside SDMs
            outside = _inverted(sdm[b].min(axis=0), ~union) if present.any() else 0.0
            out[b, 0] = inside_part + outside
    np.clip(out, 0.0, 1.0, out=out)
    return back(out if batched else out[0])
