"""Exact signed distance on the CPU with the ``edt`` package (seung-lab, Felzenszwalb-Huttenlocher EDT).

Facts about ``edt`` 3.1.2 that this module relies on (checked against scipy in tests/distance):

* ``anisotropy`` is given in ARRAY-AXIS order for C-contiguous arrays: ``edt.edt(a, anisotropy=spacing)``
  equals ``scipy.ndimage.distance_transform_edt(a != 0, sampling=spacing)``; the reversed order is wrong.
* Multi-label mode: every voxel with a non-zero label gets its distance to the nearest voxel centre with
  a DIFFERENT label (label 0 included); label-0 voxels get 0.  With ``black_border=False`` a voxel with no
  differing voxel anywhere in the array gets ``inf``.

So a two-code map ``code = 1 inside the mask, 2 outside`` gives, in ONE pass, the inside distance (to the
nearest voxel not in the mask) on the mask and the outside distance (to the nearest mask voxel) off it,
i.e. |sdm| everywhere.  This is one pass per class.  The alternative of one multi-label pass over all
classes (inside distances) plus one binary pass per class (outside distances) is K + 1 passes and was
measured slower (305 ms vs 216 ms for 128^3, K = 3, spacing (3, 0.8, 0.8), one thread), because the
outside pass has to visit almost every voxel anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import edt
import numpy as np
import torch


def signed_edt_numpy(masks: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distances (mm) of ``N`` binary masks ``(N, *spatial)`` -> float32 ``(N, *spatial)``.

    Negative inside (distance to the nearest voxel centre outside the mask), positive outside (distance
    to the nearest voxel centre inside the mask).  A mask with no boundary (empty or full) yields
    ``+inf`` / ``-inf``; the caller clamps.  Uses torch's intra-op thread count (``parallel``), so it
    follows ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` like the rest of a CPU train step (1 in
    nnU-Net's data-loader workers).
    """
    threads = max(1, torch.get_num_threads())
    anisotropy = tuple(float(s) for s in spacing)
    out = np.empty(masks.shape, dtype=np.float32)
    codes = np.empty(masks.shape[1:], dtype=np.uint8)
    for i in range(masks.shape[0]):
        mask = masks[i]
        np.add(mask, 1, out=codes, dtype=np.uint8, casting="unsafe")  # 2 inside, 1 outside
        dist = edt.edt(codes, anisotropy=anisotropy, black_border=False, parallel=threads)
        np.negative(dist, out=out[i], where=mask)
        np.copyto(out[i], dist, where=~mask)
    return out
