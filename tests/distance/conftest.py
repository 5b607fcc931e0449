"""Shared references for the distance tests: scipy's exact EDT and random anisotropic blob label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt


def scipy_sdm_reference(labels: np.ndarray, spacing, classes) -> np.ndarray:
    """(K, *spatial) float64 reference: -EDT inside, +EDT outside, +/-diagonal without boundary."""
    diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(labels.shape, spacing)))
    out = []
    for c in classes:
        mask = labels == c
        if not mask.any():
            out.append(np.full(labels.shape, diag))
        elif mask.all():
            out.append(np.full(labels.shape, -diag))
        else:
            inside = distance_transform_edt(mask, sampling=spacing)
            outside = distance_transform_edt(~mask, sampling=spacing)
            out.append(np.where(mask, -inside, outside))
    return np.stack(out)


def blob_labels(rng: np.random.Generator, shape, spacing, n_classes: int, n_blobs: int = 2) -> np.ndarray:
    """Label map with ``n_blobs`` random (possibly overlapping, later wins) ellipsoids per class."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = np.array([n * s for n, s in zip(shape, spacing)])
    labels = np.zeros(shape, dtype=np.int16)
    for c in range(1, n_classes + 1):
        for _ in range(n_blobs):
            centre = rng.uniform(0, extent)
            radii = rng.uniform(0.08, 0.3, size=len(shape)) * extent.max()
            radii = np.maximum(radii, np.array(spacing) * 1.01)
            inside = sum(((g - c0) / r) ** 2 for g, c0, r in zip(grids, centre, radii)) <= 1.0
            labels[inside] = c
    return labels


@pytest.fixture(scope="session")
def sdm_reference():
    return scipy_sdm_reference


@pytest.fixture(scope="session")
def make_blobs():
    return blob_labels
