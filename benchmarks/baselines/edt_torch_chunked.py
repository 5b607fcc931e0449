"""The chunked torch SDM path the package used before its banded one (commit d3c5faa), kept as the speed baseline of
``benchmarks/train_step.py`` (goal: SDM targets at least 10x faster than this path). Not used by the
package: its window radius is read back from the device once per chunk of lines (``.item()``), and its
no-boundary check is a ``bool(tensor)``; both are host syncs that the current path removed.

Its original description follows.

Exact signed Euclidean distance in torch, on the masks' own device (CPU or CUDA).

Algorithm (separable exact squared EDT, Saito & Toriwaki 1994 / Meijster et al. 2000, written so that
every voxel stores ONE value: its squared distance to the nearest voxel of the OPPOSITE type, i.e. inside
voxels look for outside voxels and outside voxels for inside voxels):

* Let ``t`` be the binary mask and, for an axis with spacing ``s``, ``b_a[i]`` the squared distance along
  the axis-``a`` line through ``i`` to the nearest voxel of the opposite type (``inf`` if the line has
  none).  ``b_a`` is O(1) per voxel with ``cummax``/``cummin`` over the positions where the type changes.
* First axis: ``d = b_a``.  Every further axis ``a``: ``d_new[i] = min(b_a[i], min_j d[j] + (s (i-j))^2)``
  over the line.  This is exact: for ``j`` of the same type as ``i`` the term is the usual
  Saito-Toriwaki recursion; for ``j`` of the opposite type the exact term is ``(s (i-j))^2`` (``j`` is
  itself a feature), whose minimum over ``j`` is ``b_a[i]``, and the inexact value ``d[j] + (s (i-j))^2``
  used for such ``j`` is never smaller than that, so it cannot win.
* The min-plus step is O(w) per voxel, ``w = 2r + 1``: a candidate at offset ``k`` only helps if
  ``(s k)^2 < min(d[i], b_a[i])`` (``j = i`` and the line term are already candidates), so per chunk of
  lines ``r = floor(sqrt(max_i min(d[i], b_a[i])) / s) + 1`` (capped at ``n - 1``; if that bound is
  infinite the dense O(n) form is used).

Memory: the lines of each axis are processed in chunks.  The min-plus candidate tensor of a chunk has at
most ``max_chunk_elements`` float32 entries; a chunk's line-term temporaries are bounded by the same
budget (``max_chunk_elements / (8 n)`` lines).  Besides that, the volume-sized buffers are the float32
working map, one float32 re-layout copy per axis, a bool re-layout copy of the masks and the float32
output.  Peak extra memory is therefore about ``15 * numel(masks) + 8 * max_chunk_elements`` bytes
(measured on CPU for 3 x 128^3 masks: 87 MB with 2**20, 118 MB with 2**24, i.e. 14.5 B per voxel
+ ~2 x 4 B per chunk element).  Masks without boundary (empty or full) skip the computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

INF = float("inf")
# Lines per radius estimate: smaller chunks give tighter banded windows but more host syncs.
BOUND_LINES = 2048
# Default max_chunk_elements: on CPU a cache-sized candidate tensor is fastest (measured: 2**20 -> 0.58 s,
# 2**24 -> 4.4 s for 3 x 128^3); on accelerators larger chunks mean fewer kernel launches.
DEFAULT_CHUNK_CPU = 2**20
DEFAULT_CHUNK_DEVICE = 2**24


def _line_term(lines: torch.Tensor, spacing: float) -> torch.Tensor:
    """``(L, n)`` bool lines -> float32 squared mm distance to the nearest opposite-type voxel on the line."""
    n = lines.shape[1]
    idx = torch.arange(n, device=lines.device, dtype=torch.float32)
    change = torch.zeros_like(lines)
    change[:, 1:] = lines[:, 1:] != lines[:, :-1]  # type differs from the previous voxel
    # left: last change position k <= i, the opposite voxel is k - 1, distance i - k + 1
    left = torch.where(change, idx, -INF).cummax(dim=1).values
    dist = idx - left + 1.0
    # right: first change position k >= i + 1, the opposite voxel is k, distance k - i
    first_change = torch.where(change, idx, INF).flip(1).cummin(dim=1).values.flip(1)
    dist[:, :-1] = torch.minimum(dist[:, :-1], first_change[:, 1:] - idx[:-1])
    dist.mul_(spacing)
    return dist.mul_(dist)


def _min_plus_weight(n: int, radius: int, spacing: float, device: torch.device) -> torch.Tensor:
    """Weights ``(spacing * offset)^2`` for ``_min_plus``: ``(n, n)`` dense or ``(2 radius + 1,)`` banded.

    Built in float64 on the CPU (some devices have no float64), then moved as float32.
    """
    if 2 * radius + 1 >= n:
        pos = torch.arange(n, dtype=torch.float64)
        weight = ((pos[:, None] - pos[None, :]) * spacing).square_()
    else:
        weight = (torch.arange(-radius, radius + 1, dtype=torch.float64) * spacing).square_()
    return weight.to(device=device, dtype=torch.float32)


def _min_plus(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out[:, i] = min_j x[:, j] + weight`` over the window of ``i`` for ``(L, n)`` float32 ``x``.

    ``weight`` from ``_min_plus_weight``: 2-D means every ``j`` of the line (dense, O(n) per voxel),
    1-D means ``|i - j| <= radius`` (banded, O(2 radius + 1) per voxel, out-of-line taps are ``inf``).
    """
    if weight.ndim == 2:
        return (x[:, None, :] + weight).amin(dim=2)
    radius = (weight.shape[0] - 1) // 2
    if radius == 0:
        return x
    windows = F.pad(x, (radius, radius), value=INF).unfold(1, 2 * radius + 1, 1)  # (L, n, w) view
    return (windows + weight).amin(dim=2)


def _squared_edt_opposite(
    masks: torch.Tensor, spacing: Sequence[float], max_chunk_elements: int
) -> torch.Tensor:
    """Squared mm distance of every voxel to the nearest voxel of the opposite type; ``(N, *spatial)``."""
    spatial = tuple(masks.shape[1:])
    # the first axis is O(1) per voxel, later ones O(n): put the longest axis first
    order = sorted(range(len(spatial)), key=lambda a: (-spatial[a], a))
    sq: torch.Tensor | None = None
    for axis in order:
        dim, n, s = axis + 1, spatial[axis], float(spacing[axis])
        moved_shape = masks.movedim(dim, -1).shape
        mask_lines = masks.movedim(dim, -1).contiguous().view(-1, n)
        first = sq is None
        if sq is None:
            work = torch.empty(mask_lines.shape, dtype=torch.float32, device=masks.device)
        else:
            # a copy in the new layout (or sq itself if already laid out so: each chunk is read, then
            # overwritten by its own result only, so updating in place is safe)
            work = sq.movedim(dim, -1).contiguous().view(-1, n)
        sq = None
        weights: dict[int, torch.Tensor] = {}
        big = max(1, min(max_chunk_elements // (8 * n), BOUND_LINES))
        for start in range(0, mask_lines.shape[0], big):
            stop = min(start + big, mask_lines.shape[0])
            line = _line_term(mask_lines[start:stop], s)
            if first:
                work[start:stop] = line
                continue
            chunk = work[start:stop]
            bound = torch.minimum(chunk, line).max().item()
            radius = n - 1 if not math.isfinite(bound) else min(n - 1, int(math.sqrt(bound) / s) + 1)
            if radius not in weights:
                weights[radius] = _min_plus_weight(n, radius, s, masks.device)
            weight = weights[radius]
            width = n if weight.ndim == 2 else weight.shape[0]
            small = max(1, max_chunk_elements // (n * width))
            for sub in range(0, stop - start, small):
                sub_stop = min(sub + small, stop - start)
                res = _min_plus(chunk[sub:sub_stop], weight)
                torch.minimum(res, line[sub:sub_stop], out=chunk[sub:sub_stop])
        sq = work.view(moved_shape).movedim(-1, dim)
    assert sq is not None
    return sq  # in the last axis' memory layout; the caller's elementwise ops make the final copy


def signed_edt_torch(masks: torch.Tensor, spacing: Sequence[float], max_chunk_elements: int) -> torch.Tensor:
    """Signed distances (mm) of ``N`` bool masks ``(N, *spatial)`` -> float32 ``(N, *spatial)``.

    Negative inside, positive outside, same values as ``scipy.ndimage.distance_transform_edt`` with
    ``sampling=spacing``.  A mask with no boundary (empty or full) gives ``+inf`` / ``-inf``; the caller
    clamps.  Runs on ``masks.device``; no Python loop over voxels (loops over axes and chunks of lines).
    """
    if masks.numel() == 0:
        return torch.empty(masks.shape, dtype=torch.float32, device=masks.device)
    flat = masks.reshape(masks.shape[0], -1)
    has_in, has_out = flat.any(dim=1), (~flat).any(dim=1)
    both = has_in & has_out
    if bool(both.all()):  # the common case: no gather/scatter
        dist = _squared_edt_opposite(masks, spacing, max_chunk_elements).sqrt_()
        return torch.where(masks, dist.neg(), dist).contiguous()
    no_boundary = torch.where(has_in, -INF, INF).view(-1, *([1] * (masks.ndim - 1)))
    out = no_boundary.expand(masks.shape).contiguous()
    if bool(both.any()):
        sel = masks[both]
        dist = _squared_edt_opposite(sel, spacing, max_chunk_elements).sqrt_()
        out[both] = torch.where(sel, dist.neg(), dist)
    return out
