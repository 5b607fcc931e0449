"""Hypothesis property tests: random small shapes, spacings and class counts, both backends vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from nnunet_sdm.distance import (
    normalise_xue,
    signed_distance,
    signed_distance_masks,
    truncate,
    truncated_signed_distance,
)
from nnunet_sdm.distance._edt_torch import window_radii
from nnunet_sdm.host_syncs import HostSyncCounter

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


@settings(max_examples=60, deadline=None)
@given(label_maps(), st.floats(0.2, 12.0), st.sampled_from(["edt", "torch"]))
def test_truncated_signed_distance_is_the_clamped_full_map(sdm_reference, case, tau, backend):
    labels, spacing, classes = case
    truncated = truncated_signed_distance(
        labels, spacing, classes, tau, backend=backend, max_chunk_elements=89
    )
    assert truncated.dtype == np.float32
    expected = np.clip(sdm_reference(labels, spacing, classes) / tau, -1.0, 1.0)
    assert np.abs(truncated - expected).max() < 1e-5
    np.testing.assert_array_equal(truncated < 0, expected < 0)


class _CallCounter(TorchFunctionMode):
    """Every torch call made in the block, by name (kernels launched, up to the ops that fuse several)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("band", [None, 4.0])
def test_torch_path_makes_no_host_sync_and_the_same_calls_whatever_the_data(band):
    """The device path never waits for the host, and its work is fixed by the shapes alone: a map whose
    distances are all tiny (noise) and one whose distances span the patch (one voxel) make the same calls."""
    spacing = (2.0, 0.7, 0.9)
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 3, size=(2, 9, 17, 13)))
    single = torch.zeros_like(noise)
    single[0, 4, 8, 6] = 1
    calls = []
    for labels in (noise, single):
        with HostSyncCounter() as syncs, _CallCounter() as counter:
            if band is None:
                signed_distance(labels, spacing, [1, 2], backend="torch")
            else:
                truncated_signed_distance(labels, spacing, [1, 2], band, backend="torch")
        assert syncs.count == 0, syncs.calls
        calls.append(counter.calls)
    assert calls[0] == calls[1]


def test_band_searches_only_the_band():
    # floor(tau / spacing) voxels per axis, capped by the axis length; the whole line for a full map
    assert window_radii((40, 200, 200), (3.0, 0.8, 0.8), 5.0) == [1, 6, 6]
    assert window_radii((4, 200), (0.5, 0.8), 5.0) == [3, 6]
    assert window_radii((40, 200), (3.0, 0.8), None) == [39, 199]
