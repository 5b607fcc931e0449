"""Normalisations of signed distance maps (numpy or torch; one torch implementation serves both)."""

from __future__ import annotations

import math

import torch

from nnunet_sdm.checks import check_positive

from ._common import ArrayLike, as_tensor, batched_flag, check_array, check_spatial_shape

__all__ = ["normalise_xue", "truncate"]


def _check_float(x: ArrayLike, name: str) -> None:
    t, _ = as_tensor(x)
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype (a signed distance map), got {x.dtype}")


def normalise_xue(sdm: ArrayLike, spatial_dims: int, mask: ArrayLike | None = None) -> ArrayLike:
    """Normalise an SDM to [-1, 1] per sample and class (Xue et al. 2020, section "SDM Learning").

    Xue et al. "normalize the phi(x) [eq. 2] to be in the range [-1, 1] for each input image ... by
    dividing the SDM by the maximum positive value for points outside the organ, or by the minimum
    negative value for points inside the organ".  Per (sample, class) slice, with
    ``P = max(sdm)`` and ``N = |min(sdm)|``:

    * ``sdm > 0`` (outside) -> ``sdm / P``  in (0, 1], the farthest outside voxel is exactly 1;
    * ``sdm < 0`` (inside)  -> ``sdm / N``  in [-1, 0), the deepest inside voxel is exactly -1;
    * ``sdm == 0`` -> 0 (does not occur in maps from ``signed_distance``).

    So the sign is preserved exactly (``result < 0`` iff ``sdm < 0``).  Explicit rules for slices
    without boundary: no negative value (class absent; ``signed_distance`` gives +D everywhere) ->
    +1 everywhere; otherwise no positive value (class filling the patch, -D everywhere) -> -1 everywhere.

    Args:
        sdm: float SDM, numpy or torch, shape ``(C, *spatial)`` or ``(B, C, *spatial)`` (batched iff
            ``sdm.ndim == spatial_dims + 2``); values must be finite.
        spatial_dims: number of spatial axes, 2 or 3.
        mask: optional bool array of ``sdm``'s shape (or one channel of it): only these voxels set ``P``
            and ``N`` (e.g. the voxels whose distance is certified under nnU-Net's ignore label,
            ``certified_signed_distance``); every voxel is still divided.

    Returns:
        Same shape, dtype, container and device as ``sdm``.
    """
    check_array(sdm, "sdm")
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    _check_float(sdm, "sdm")
    batched = batched_flag(sdm, "sdm", spatial_dims + 1, "(C, *spatial)", f"spatial_dims={spatial_dims}")
    t, back = as_tensor(sdm)
    x = t if batched else t[None]
    check_spatial_shape(tuple(x.shape[2:]), "sdm")
    v = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
    counted = v
    if mask is not None:
        m, _ = as_tensor(mask)
        m = (m if batched else m[None]).to(device=v.device, dtype=torch.bool)
        if (
            m.ndim != x.ndim
            or m.shape[0] != x.shape[0]
            or m.shape[2:] != x.shape[2:]
            or m.shape[1] not in (1, x.shape[1])
        ):
            raise ValueError(f"mask: shape {tuple(mask.shape)} does not match the sdm's {tuple(sdm.shape)}")
        counted = torch.where(m.expand_as(x).reshape(v.shape), v, torch.zeros_like(v))
    pos_max = counted.amax(dim=2, keepdim=True)
    neg_min = counted.amin(dim=2, keepdim=True)
    one = torch.ones((), dtype=v.dtype, device=v.device)
    pos_div = torch.where(pos_max > 0, pos_max, one)
    neg_div = torch.where(neg_min < 0, -neg_min, one)
    out = torch.where(v > 0, v / pos_div, torch.where(v < 0, v / neg_div, torch.zeros_like(v)))
    out = torch.where(neg_min >= 0, one, torch.where(pos_max <= 0, -one, out))  # no-boundary rules
    out = out.reshape(x.shape)
    return back(out if batched else out[0])


def truncate(sdm: ArrayLike, tau: float) -> ArrayLike:
    """Truncated, scaled SDM: ``clamp(sdm / tau, -1, 1)``.

    Values within ``tau`` mm of the boundary map linearly to (-1, 1); farther values saturate at -1
    (inside) / +1 (outside).  The sign is preserved (an SDM from ``signed_distance`` has no zeros).
    Elementwise, so any shape works.

    Args:
        sdm: float SDM in mm, numpy or torch.
        tau: truncation distance in mm, finite and > 0.

    Returns:
        Same shape, dtype, container and device as ``sdm``.
    """
    check_array(sdm, "sdm")
    _check_float(sdm, "sdm")
    check_positive("tau (mm)", tau)
    t, back = as_tensor(sdm)
    return back(torch.clamp(t / float(tau), -1.0, 1.0))
