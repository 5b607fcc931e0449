"""Hypothesis property tests: random small shapes, spacings and class counts, both backends vs scipy."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunet_sdm.distance import normalise_xue, signed_distance, signed_distance_masks, truncate

TOL = 1e-4


@st.composite
def label_maps(draw):
    nd = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 9 if nd == 3 else 16), min_size=nd, max_size=nd)))
    spacing = tuple(draw(st.lists(st.floats(0.3, 5.0), min_size=nd, max_size=nd)))
    n_labels = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # mix of pure noise and blocky maps (coarse noise upsampled) so both thin and thick structures occur
    if draw(st.booleans()):
        labels = rng.integers(0, n_labels + 1, size=shape)
    else:
        coarse = rng.integers(0, n_labels + 1, size=tuple(max(1, n // 3) for n in shape))
        labels = coarse
        for axis, n in enumerate(shape):
            labels = np.repeat(labels, -(-n // labels.shape[axis]), axis=axis)
        labels = labels[tuple(slice(0, n) for n in shape)]
    classes = draw(st.lists(st.integers(0, n_labels + 1), min_size=1, max_size=4, unique=True))
    return labels.astype(np.int16), spacing, classes


@settings(max_examples=60, deadline=None)
@given(label_maps(), st.sampled_from(["edt", "torch"]))
def test_signed_distance_matches_scipy_and_sign_gives_mask(sdm_reference, case, backend):
    labels, spacing, classes = case
    sdm = signed_distance(labels, spacing, classes, backend=backend, max_chunk_elements=97)
    assert sdm.dtype == np.float32 and np.isfinite(sdm).all()
    assert np.abs(sdm - sdm_reference(labels, spacing, classes)).max() < TOL
    for k, c in enumerate(classes):
        np.testing.assert_array_equal(sdm[k] < 0, labels == c)


@settings(max_examples=30, deadline=None)
@given(label_maps())
def test_backends_agree_on_batched_masks(case):
    labels, spacing, classes = case
    masks = np.stack([labels == c for c in classes])[None].repeat(2, axis=0)
    masks[1] = ~masks[1]
    a = signed_distance_masks(masks, spacing, backend="edt")
    b = signed_distance_masks(torch.from_numpy(masks), spacing, backend="torch").numpy()
    assert np.abs(a - b).max() < TOL
    np.testing.assert_array_equal(a < 0, masks)


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.floats(0.1, 20.0))
def test_normalisations_keep_sign_and_range(case, tau):
    labels, spacing, classes = case
    sdm = signed_distance(labels, spacing, classes)
    nd = len(spacing)
    xue = normalise_xue(sdm, spatial_dims=nd)
    assert np.isfinite(xue).all() and xue.min() >= -1 and xue.max() <= 1
    np.testing.assert_array_equal(xue < 0, sdm < 0)
    np.testing.assert_array_equal(xue > 0, sdm > 0)
    for k in range(len(classes)):
        assert xue[k].max() == 1.0 or (sdm[k] < 0).all()
        assert xue[k].min() == -1.0 or (sdm[k] > 0).all()
    tr = truncate(sdm, tau)
    assert tr.min() >= -1 and tr.max() <= 1
    np.testing.assert_array_equal(tr < 0, sdm < 0)
