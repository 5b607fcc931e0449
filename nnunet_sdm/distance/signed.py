"""Exact signed distance maps (mm, anisotropic, multi-class) of label maps and region masks.

Convention (docs/usage.md, Xue et al. 2020 eq. 2 on the voxel grid): for a class/region ``c`` and a voxel
centre ``x``

* ``sdm(x) = +min_{y in c} |x - y|``      if ``x`` is not in ``c`` (outside, >= min(spacing) > 0),
* ``sdm(x) = -min_{y not in c} |x - y|``  if ``x`` is in ``c``      (inside, <= -min(spacing) < 0),

with ``|.|`` the Euclidean norm in mm (``spacing`` per array axis, in array-axis order) between voxel
centres.  So ``sdm < 0`` gives back the mask exactly and the values equal
``scipy.ndimage.distance_transform_edt(~mask, sampling=spacing)`` outside and
``distance_transform_edt(mask, sampling=spacing)`` inside.  There is no zero level on the grid: the
surface lies between the last inside and the first outside voxel centre.

No boundary in the array: a class absent from the array (or from one batch member) is ``+D`` everywhere,
a class filling it is ``-D`` everywhere, with ``D = sqrt(sum((shape_i * spacing_i)^2))`` the array
diagonal in mm -- finite and larger than any distance between two voxel centres.  Never inf or NaN.

Backends: ``"edt"`` (CPU, the ``edt`` package, torch's thread count), ``"torch"`` (exact separable EDT in
torch on the tensor's own device, without host syncs; banded for truncated maps) and ``"auto"`` (numpy
-> ``"edt"``; a tensor on an accelerator, or a truncated map of a CPU tensor -> ``"torch"``; a full map of
a CPU tensor -> ``"edt"``).  The output has the input's container type and device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnunet_sdm.checks import check_integer, check_positive

from ._common import (
    ArrayLike,
    batched_flag,
    check_array,
    check_backend,
    check_classes,
    check_spacing,
    check_spatial_shape,
    diagonal_mm,
    is_integer_or_bool,
)
from ._edt_cpu import signed_edt_numpy
from ._edt_torch import DEFAULT_CHUNK_CPU, DEFAULT_CHUNK_DEVICE, signed_edt_torch

__all__ = [
    "certified_signed_distance",
    "signed_distance",
    "signed_distance_masks",
    "truncated_signed_distance",
]


def signed_distance(
    labels: ArrayLike,
    spacing: Sequence[float],
    classes: Sequence[int],
    *,
    backend: str = "auto",
    max_chunk_elements: int | None = None,
) -> ArrayLike:
    """Signed distance map (mm) of each class of an integer label map.

    Args:
        labels: integer (or bool) label map, numpy array or torch tensor, shape ``(*spatial)`` or batched
            ``(B, *spatial)``; it is batched iff ``labels.ndim == len(spacing) + 1``.  2D or 3D.
        spacing: voxel size in mm per spatial array axis (array-axis order), 2 or 3 positive numbers.
        classes: distinct label values; channel ``k`` of the result is the SDM of ``labels == classes[k]``.
            Label values not listed simply count as "not in the class".
        backend: ``"auto"``, ``"edt"`` or ``"torch"`` (see the module docstring).
        max_chunk_elements: torch backend only: the largest number of
            voxels processed at once (whole masks; the temporaries are about five float32 volumes of
            them, see ``_edt_torch``).  Default 2**20 on CPU, 2**27 on other devices (fewer kernels).

    Returns:
        float32, shape ``(len(classes), *spatial)`` or ``(B, len(classes), *spatial)``, same container
        (numpy / torch) and device as ``labels``.  Negative inside, positive outside (module docstring);
        ``+D`` for an absent class, ``-D`` for a class filling the array.
    """
    labels, spacing_t, classes_t, batched = _checked_labels(
        labels, spacing, classes, backend, max_chunk_elements
    )
    lab = labels if batched else labels[None]
    out = _signed_from_masks(label_masks(lab, classes_t), spacing_t, backend, max_chunk_elements)
    return out if batched else out[0]


def truncated_signed_distance(
    labels: ArrayLike,
    spacing: Sequence[float],
    classes: Sequence[int],
    tau: float,
    *,
    backend: str = "auto",
    max_chunk_elements: int | None = None,
) -> ArrayLike:
    """The truncated SDM ``clamp(signed_distance(...) / tau, -1, 1)`` of each class, computed in a band.

    Same arguments, shapes and conventions as ``signed_distance``, plus ``tau`` (mm, > 0). The torch
    backend searches only ``floor(tau / spacing)`` voxels per axis (``_edt_torch``: exact after the
    clamp, linear in the patch, no host sync); the ``edt`` backend computes the full map and clamps it.
    An absent class is +1 everywhere, a class filling the array -1.

    Returns:
        float32 in [-1, 1], shape ``(len(classes), *spatial)`` or ``(B, len(classes), *spatial)``, same
        container and device as ``labels``.
    """
    tau = check_positive("tau (mm)", tau)
    labels, spacing_t, classes_t, batched = _checked_labels(
        labels, spacing, classes, backend, max_chunk_elements
    )
    lab = labels if batched else labels[None]
    masks = label_masks(lab, classes_t)
    out = _signed_from_masks(masks, spacing_t, backend, max_chunk_elements, band_mm=tau)
    out = out / tau if isinstance(out, torch.Tensor) else out / np.float32(tau)
    out = out.clamp_(-1.0, 1.0) if isinstance(out, torch.Tensor) else np.clip(out, -1.0, 1.0, out=out)
    return out if batched else out[0]


def label_masks(labels: ArrayLike, classes: Sequence[int]) -> ArrayLike:
    """``(B, *spatial)`` labels -> ``(B, K, *spatial)`` bool masks, channel ``k`` ``labels == classes[k]``.

    Tensors: consecutive classes (the usual 1..K) in one broadcast comparison against ``arange`` made on
    the device (two kernels however many classes); other classes one comparison per class with a Python
    scalar. Either way no class tensor is copied to the device (a host sync from pageable memory).
    """
    view = (1, len(classes)) + (1,) * (labels.ndim - 1)
    if isinstance(labels, torch.Tensor):
        first = classes[0] if len(classes) else 0
        if list(classes) != list(range(first, first + len(classes))):
            return torch.stack([labels == c for c in classes], dim=1)
        return labels[:, None] == torch.arange(first, first + len(classes), device=labels.device).view(view)
    return labels[:, None] == np.asarray(classes, dtype=np.int64).reshape(view)


def signed_distance_masks(
    masks: ArrayLike,
    spacing: Sequence[float],
    *,
    backend: str = "auto",
    max_chunk_elements: int | None = None,
) -> ArrayLike:
    """Signed distance map (mm) of each channel of a stack of binary region masks.

    Same convention, backends and no-boundary rule as ``signed_distance``; the regions may overlap
    (nnU-Net region-based training), each channel is treated on its own.

    Args:
        masks: bool (or integer, non-zero = inside) masks, numpy or torch, shape ``(C, *spatial)`` or
            batched ``(B, C, *spatial)``; batched iff ``masks.ndim == len(spacing) + 2``.
        spacing: voxel size in mm per spatial array axis (array-axis order), 2 or 3 positive numbers.
        backend, max_chunk_elements: as in ``signed_distance``.

    Returns:
        float32 of the same shape as ``masks``, same container and device.
    """
    check_array(masks, "masks")
    spacing_t = check_spacing(spacing)
    check_backend(backend)
    _check_chunk(max_chunk_elements)
    if not is_integer_or_bool(masks):
        raise ValueError(
            f"masks must have a bool (or integer, non-zero = inside) dtype, got {masks.dtype}; "
            "threshold it first, e.g. masks > 0.5"
        )
    batched = batched_flag(
        masks, "masks", len(spacing_t) + 1, "(C, *spatial)", f"a {len(spacing_t)}-D spacing"
    )
    m = masks if batched else masks[None]
    check_spatial_shape(tuple(m.shape[2:]), "masks")
    m = m.bool() if isinstance(m, torch.Tensor) else m.astype(bool, copy=False)
    out = _signed_from_masks(m, spacing_t, backend, max_chunk_elements)
    return out if batched else out[0]


def certified_signed_distance(
    masks: torch.Tensor,
    known: torch.Tensor | None,
    spacing: Sequence[float],
    *,
    tau: float | None = None,
    backend: str = "auto",
    max_chunk_elements: int | None = None,
    tolerance_mm: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDMs of masks that are known only on part of the array (nnU-Net's ignore label), and where they hold.

    The SDM is monotone in the mask (a larger mask has a smaller SDM everywhere), so every completion of
    the unknown voxels gives an SDM between two bounds: ``lo``, the SDM of ``masks | ~known`` (every
    unknown voxel inside), and ``hi``, the SDM of ``masks & known`` (every unknown voxel outside), and
    both are completions. A voxel is *certified* where the bounds agree: there the value is the same
    whatever the unknown voxels are. This is exact (a voxel with ``lo < hi`` has two completions with
    different values) and is never true on an unknown voxel (``lo < 0 < hi`` there). Unknown voxels are
    never treated as background: the value returned is ``hi``, used only where it is certified.

    Args:
        masks: bool ``(B, K, *spatial)`` tensor, the known foreground of each class or region (its value
            on unknown voxels is not read).
        known: bool ``(B, 1, *spatial)`` (or ``(B, K, *spatial)``) tensor, True where the label is known;
            None: all known (then one transform, and ``certified`` is None).
        spacing: mm per spatial axis.
        tau: if given, the truncated map ``clamp(sdm / tau, -1, 1)`` (``truncated_signed_distance``;
            certified where the clamped bounds agree, i.e. also where both lie beyond ``tau``).
        backend, max_chunk_elements: as in ``signed_distance``.
        tolerance_mm: bounds closer than this (mm) agree (the two transforms may round differently).

    Returns:
        ``(sdm, certified)``: float32 ``(B, K, *spatial)`` (mm, or in [-1, 1] with ``tau``) and bool of the
        same shape (None when ``known`` is None), on the masks' device.
    """
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a bool torch tensor (B, K, *spatial), got {type(masks).__name__}")
    spacing_t = check_spacing(spacing)
    check_backend(backend)
    _check_chunk(max_chunk_elements)
    if masks.ndim != len(spacing_t) + 2:
        raise ValueError(
            f"masks: expected shape (B, K, *spatial) for a {len(spacing_t)}-D spacing, got {tuple(masks.shape)}"
        )
    check_spatial_shape(tuple(masks.shape[2:]), "masks")
    if tau is not None:
        tau = check_positive("tau (mm)", tau)

    def transform(m: torch.Tensor) -> torch.Tensor:
        out = _signed_from_masks(m, spacing_t, backend, max_chunk_elements, band_mm=tau)
        return out if tau is None else out.div_(tau).clamp_(-1.0, 1.0)

    if known is None:
        return transform(masks), None
    if (
        known.dtype != torch.bool
        or known.ndim != masks.ndim
        or known.shape[0] != masks.shape[0]
        or known.shape[2:] != masks.shape[2:]
    ):
        raise ValueError(
            f"known must be a bool tensor of shape (B, 1 or K, *spatial) matching masks {tuple(masks.shape)}, "
            f"got {known.dtype} {tuple(known.shape)}"
        )
    hi = transform(masks & known)
    lo = transform(masks | ~known)
    tolerance = tolerance_mm if tau is None else tolerance_mm / tau
    certified = (hi - lo) <= tolerance
    return hi, certified


def _checked_labels(labels, spacing, classes, backend, max_chunk_elements):
    """The argument checks of ``signed_distance``; returns (labels, spacing, classes, batched)."""
    check_array(labels, "labels")
    spacing_t = check_spacing(spacing)
    classes_t = check_classes(classes)
    check_backend(backend)
    _check_chunk(max_chunk_elements)
    if not is_integer_or_bool(labels):
        raise ValueError(
            f"labels must have an integer or bool dtype (a label map), got {labels.dtype}; "
            "convert it first, e.g. labels.long() or labels.astype(np.int16)"
        )
    batched = batched_flag(labels, "labels", len(spacing_t), "(*spatial)", f"a {len(spacing_t)}-D spacing")
    check_spatial_shape(tuple(labels.shape[1:] if batched else labels.shape), "labels")
    return labels, spacing_t, classes_t, batched


def _signed_from_masks(
    masks: ArrayLike,
    spacing: tuple[float, ...],
    backend: str,
    max_chunk_elements: int | None,
    band_mm: float | None = None,
) -> ArrayLike:
    """``(B, K, *spatial)`` bool masks -> clamped float32 SDMs of the same shape, container and device.

    With ``band_mm`` only distances below it are exact (the torch path searches only that band), larger
    ones are clamped to ``band_mm`` by the torch path; callers truncate at ``band_mm``."""
    shape = tuple(masks.shape)
    spatial = shape[2:]
    flat = masks.reshape((-1,) + spatial)
    diag = diagonal_mm(spatial, spacing)
    if isinstance(flat, torch.Tensor):
        # auto: the banded torch transform beats edt on the CPU too (0.11 s against 0.26 s for 13 classes at
        # 2 x 40 x 96 x 80, benchmarks/train_step.py); a full map is O(n) per voxel in torch, edt's is O(1)
        on_cpu = flat.device.type == "cpu"
        use_torch = backend == "torch" or (backend == "auto" and (not on_cpu or band_mm is not None))
        if use_torch:
            chunk = _chunk(max_chunk_elements, flat.device)
            out = signed_edt_torch(flat, spacing, chunk, band_mm).clamp_(-diag, diag)
        else:
            out_np = np.clip(signed_edt_numpy(flat.cpu().numpy(), spacing), -diag, diag)
            out = torch.from_numpy(out_np).to(flat.device)
    elif backend == "torch":
        chunk = _chunk(max_chunk_elements, torch.device("cpu"))
        out = signed_edt_torch(torch.from_numpy(flat), spacing, chunk, band_mm).clamp_(-diag, diag).numpy()
    else:
        out = signed_edt_numpy(flat, spacing)
        np.clip(out, -diag, diag, out=out)
    return out.reshape(shape)


def _check_chunk(max_chunk_elements: int | None) -> None:
    if max_chunk_elements is not None:
        check_integer("max_chunk_elements", max_chunk_elements)


def _chunk(max_chunk_elements: int | None, device: torch.device) -> int:
    if max_chunk_elements is None:
        return DEFAULT_CHUNK_CPU if device.type == "cpu" else DEFAULT_CHUNK_DEVICE
    return int(max_chunk_elements)
