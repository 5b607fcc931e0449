"""normalise_xue and truncate: values, explicit no-boundary rules, containers and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_sdm.distance import normalise_xue, signed_distance, truncate


@pytest.fixture(scope="module")
def sdm_and_labels():
    labels = np.zeros((2, 8, 10, 12), dtype=np.int16)
    labels[0, 2:6, 3:8, 4:9] = 1
    labels[0, 1:3, 1:3, 1:3] = 2
    labels[1, 3:5, 2:9, 2:10] = 2  # class 1 absent from member 1
    labels[1, ...][labels[1] == 0] = 3  # class 3 is everything else in member 1
    sdm = signed_distance(labels, (2.0, 1.0, 0.7), [1, 2, 3])
    return sdm, labels


def test_xue_range_sign_and_extremes(sdm_and_labels):
    sdm, _ = sdm_and_labels
    out = normalise_xue(sdm, spatial_dims=3)
    assert out.shape == sdm.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    np.testing.assert_array_equal(np.sign(out), np.sign(sdm))
    # member 0, class 1: the farthest outside voxel is exactly +1, the deepest inside voxel exactly -1
    assert out[0, 0].max() == 1.0 and out[0, 0].min() == -1.0
    np.testing.assert_allclose(
        out[0, 0][sdm[0, 0] > 0], sdm[0, 0][sdm[0, 0] > 0] / sdm[0, 0].max(), rtol=1e-6
    )
    np.testing.assert_allclose(
        out[0, 0][sdm[0, 0] < 0], sdm[0, 0][sdm[0, 0] < 0] / -sdm[0, 0].min(), rtol=1e-6
    )


def test_xue_absent_class_is_plus_one_and_filling_class_minus_one():
    sdm = np.stack(
        [
            np.full((4, 5), 7.5, dtype=np.float32),  # absent: all positive (not even constant)
            np.full((4, 5), -3.0, dtype=np.float32),  # filling: all negative
        ]
    )
    sdm[0, 1, 1] = 2.0
    sdm[1, 2, 2] = -0.5
    out = normalise_xue(sdm, spatial_dims=2)
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1], -1.0)


def test_xue_is_per_sample_and_class(sdm_and_labels):
    sdm, _ = sdm_and_labels
    batched = normalise_xue(sdm, spatial_dims=3)
    for b in range(sdm.shape[0]):
        np.testing.assert_array_equal(normalise_xue(sdm[b], spatial_dims=3), batched[b])
    # member 1: class 1 absent -> +1, class 3 is present there (not filling, class 2 cuts it)
    np.testing.assert_array_equal(batched[1, 0], 1.0)


def test_xue_torch_matches_numpy(sdm_and_labels):
    sdm, _ = sdm_and_labels
    t = normalise_xue(torch.from_numpy(sdm), spatial_dims=3)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), normalise_xue(sdm, spatial_dims=3))


def test_xue_empty_batch():
    out = normalise_xue(np.zeros((0, 2, 3, 4, 5), dtype=np.float32), spatial_dims=3)
    assert out.shape == (0, 2, 3, 4, 5)


def test_xue_argument_checks():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        normalise_xue(np.zeros((1, 3, 4), dtype=np.float32), spatial_dims=1)
    with pytest.raises(ValueError, match="sdm must have a floating-point dtype"):
        normalise_xue(np.zeros((1, 3, 4), dtype=np.int16), spatial_dims=2)
    with pytest.raises(ValueError, match="sdm must have shape"):
        normalise_xue(np.zeros((3, 4), dtype=np.float32), spatial_dims=2)


def test_truncate_values_and_sign(sdm_and_labels):
    sdm, _ = sdm_and_labels
    out = truncate(sdm, 2.0)
    np.testing.assert_allclose(out, np.clip(sdm / 2.0, -1, 1), rtol=1e-6)
    np.testing.assert_array_equal(np.sign(out), np.sign(sdm))
    t = truncate(torch.from_numpy(sdm), 2.0)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), out)


@pytest.mark.parametrize("tau", [0, -1.0, float("inf"), float("nan"), "3", True])
def test_truncate_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match=r"tau \(mm\) must be a finite number > 0"):
        truncate(np.zeros((1, 3, 4), dtype=np.float32), tau)
