"""ni_dm (Li et al. eq. 1) and caliva_penalty (Calivá et al. section 2) against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.ndimage import distance_transform_edt

from nnunet_sdm.distance import caliva_penalty, ni_dm

# --- NI-DM -----------------------------------------------------------------------------------------


def ni_dm_reference(mask, spacing, offset, structure):
    """Eq. 1 with scipy: per connected component C, (max_C D + offset - D) / max_C D, 0 outside."""
    dist = distance_transform_edt(mask, sampling=spacing)
    comps, n = ndimage.label(mask, structure=structure)
    out = np.zeros(mask.shape)
    for i in range(1, n + 1):
        c = comps == i
        m = dist[c].max()
        out[c] = (m + offset - dist[c]) / m
    return out


def test_ni_dm_hand_values_unit_spacing():
    labels = np.zeros((9, 12), dtype=np.int16)
    labels[2:7, 2:7] = 1  # 5x5 square: centre D = 3
    labels[4, 9:12] = 1  # 1x3 line touching the border: D = 1 everywhere
    phi = ni_dm(labels, (1.0, 1.0), [1])
    assert phi.shape == (1, 9, 12) and phi.dtype == np.float32
    assert phi[0, 4, 4] == pytest.approx(1 / 3)  # (3 + 1 - 3) / 3
    assert phi[0, 2, 4] == pytest.approx(1.0)  # boundary voxel: (3 + 1 - 1) / 3
    assert phi[0, 3, 3] == pytest.approx(2 / 3)
    np.testing.assert_allclose(phi[0, 4, 9:12], 1.0)  # the thin component has its own maximum
    assert (phi[0][labels == 0] == 0).all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.8)])
def test_ni_dm_matches_reference_per_component(spacing, make_blobs):
    rng = np.random.default_rng(11)
    labels = make_blobs(rng, (14, 30, 26), spacing, n_classes=2, n_blobs=3)
    phi = ni_dm(labels, spacing, [1, 2])
    full = np.ones((3, 3, 3), dtype=bool)
    for k, c in enumerate([1, 2]):
        ref = ni_dm_reference(labels == c, spacing, min(spacing), full)
        np.testing.assert_allclose(phi[k], ref, atol=1e-5)
    assert phi.min() >= 0 and phi.max() <= 1
    assert ((phi > 0) == np.stack([labels == 1, labels == 2])).all()


def test_ni_dm_connectivity_and_offset():
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[3:5, 3:5, 3:5] = 1  # touches the first cube only at a corner
    six = np.zeros((3, 3, 3), dtype=bool)
    six[1, 1, :] = six[1, :, 1] = six[:, 1, 1] = True
    for conn, structure in [(6, six), (26, np.ones((3, 3, 3), dtype=bool))]:
        phi = ni_dm(labels, (1.0, 2.0, 1.0), [1], connectivity=conn, offset=0.5)
        np.testing.assert_allclose(
            phi[0], ni_dm_reference(labels == 1, (1.0, 2.0, 1.0), 0.5, structure), atol=1e-6
        )


def test_ni_dm_absent_filling_batched_and_torch():
    labels = np.zeros((2, 5, 6, 7), dtype=np.int16)
    labels[0] = 1  # class 1 fills member 0
    labels[1, 2, 2, 2] = 1
    phi = ni_dm(torch.from_numpy(labels), (2.0, 1.0, 1.0), [1, 2])
    assert isinstance(phi, torch.Tensor) and phi.shape == (2, 2, 5, 6, 7)
    phi = phi.numpy()
    np.testing.assert_array_equal(phi[0, 0], 1.0)  # no boundary: 1 everywhere
    np.testing.assert_array_equal(phi[:, 1], 0.0)  # absent: 0
    assert phi[1, 0, 2, 2, 2] == 1.0 and phi[1, 0].sum() == 1.0  # single voxel
    assert np.isfinite(phi).all()


def test_ni_dm_2d_and_argument_checks():
    labels = np.zeros((5, 6), dtype=np.int16)
    labels[1:4, 1:4] = 1
    assert ni_dm(labels, (1.0, 1.0), [1], connectivity=4).shape == (1, 5, 6)
    with pytest.raises(ValueError, match="connectivity must be one of"):
        ni_dm(labels, (1.0, 1.0), [1], connectivity=26)
    with pytest.raises(ValueError, match=r"offset \(mm\) must be a finite number > 0"):
        ni_dm(labels, (1.0, 1.0), [1], offset=0.0)
    with pytest.raises(ValueError, match="labels must have an integer or bool dtype"):
        ni_dm(labels.astype(np.float32), (1.0, 1.0), [1])


# --- Calivá Phi ------------------------------------------------------------------------------------


def segloss_reference(posmask, spacing):
    """compute_edts_forPenalizedLoss of Ma et al.'s SegLoss (binary), with sampling=spacing added."""
    negmask = ~posmask
    pos_edt = distance_transform_edt(posmask, sampling=spacing)
    pos_edt = (np.max(pos_edt) - pos_edt) * posmask
    neg_edt = distance_transform_edt(negmask, sampling=spacing)
    neg_edt = (np.max(neg_edt) - neg_edt) * negmask
    return pos_edt / np.max(pos_edt) + neg_edt / np.max(neg_edt)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.8)])
def test_caliva_binary_matches_segloss_reference(spacing, make_blobs):
    rng = np.random.default_rng(12)
    labels = make_blobs(rng, (12, 28, 24), spacing, n_classes=1, n_blobs=2)
    phi = caliva_penalty(labels, spacing, [1])
    assert phi.shape == (1, 12, 28, 24) and phi.dtype == np.float32
    np.testing.assert_allclose(phi[0], segloss_reference(labels == 1, spacing), atol=1e-5)


def test_caliva_multiclass_inside_maps_are_independent(make_blobs):
    spacing = (1.0, 1.0, 1.0)
    labels = np.zeros((16, 20, 20), dtype=np.int16)
    labels[2:14, 2:18, 2:10] = 1  # large
    labels[6:9, 12:15, 13:16] = 2  # small
    phi = caliva_penalty(labels, spacing, [1, 2])[0]
    for c in (1, 2):
        mask = labels == c
        inside = distance_transform_edt(mask)[mask]
        expected = (inside.max() - inside) / (inside.max() - inside.min())
        np.testing.assert_allclose(phi[mask], expected, atol=1e-6)
        assert phi[mask].max() == 1.0 and phi[mask].min() == 0.0
    bg = labels == 0
    outside = distance_transform_edt(bg)[bg]  # distance to the nearest voxel of ANY class
    np.testing.assert_allclose(
        phi[bg], (outside.max() - outside) / (outside.max() - outside.min()), atol=1e-6
    )
    per_class = caliva_penalty(labels, spacing, [1, 2], per_class=True)
    assert per_class.shape == (2, 16, 20, 20)
    np.testing.assert_allclose(per_class[1][labels == 2], phi[labels == 2], atol=1e-6)
    not2 = labels != 2
    out2 = distance_transform_edt(not2)[not2]
    np.testing.assert_allclose(per_class[1][not2], (out2.max() - out2) / (out2.max() - out2.min()), atol=1e-6)


def test_caliva_edge_cases():
    labels = np.zeros((3, 6, 7, 8), dtype=np.int16)
    labels[0, 3, :, :] = 1  # 1-voxel-thin plane: every inside voxel is at the boundary
    labels[2] = 1  # class fills member 2
    phi = caliva_penalty(torch.from_numpy(labels), (2.0, 1.0, 1.0), [1])
    assert isinstance(phi, torch.Tensor) and phi.shape == (3, 1, 6, 7, 8)
    phi = phi.numpy()
    assert np.isfinite(phi).all() and phi.min() >= 0 and phi.max() <= 1
    np.testing.assert_array_equal(phi[0, 0, 3], 1.0)
    np.testing.assert_array_equal(phi[1], 0.0)  # class absent: no boundary, no extra penalty
    np.testing.assert_array_equal(phi[2], 0.0)  # class fills: no boundary
    phi2d = caliva_penalty(labels[0, 0:1, :, :][0], (1.0, 1.0), [1])
    assert phi2d.shape == (1, 7, 8)
    with pytest.raises(ValueError, match="per_class must be a bool"):
        caliva_penalty(labels, (1.0, 1.0, 1.0), [1], per_class=1)


# --- both maps on the tensor's device (torch backend) -------------------------------------------------
def _target_cases(make_blobs):
    rng = np.random.default_rng(5)
    blobs = np.stack([make_blobs(rng, (10, 18, 14), (2.5, 0.8, 0.8), n_classes=2) for _ in range(3)])
    blobs[1][blobs[1] == 2] = 0  # class 2 absent from member 1
    edge = np.zeros((3, 6, 7, 8), dtype=np.int16)
    edge[0, 3] = 1  # 1-voxel-thin plane
    edge[2] = 2  # a class fills member 2; member 1 empty
    return [(blobs, (2.5, 0.8, 0.8)), (edge, (2.0, 1.0, 1.0)), (blobs[0, 4], (0.8, 0.8))]


def _assert_torch_backend_equals_edt(target, labels, spacing, **kwargs) -> None:
    """The torch backend gives the edt backend's map, for a tensor (as a tensor) and for numpy (as numpy)."""
    expected = target(labels, spacing, [1, 2], backend="edt", **kwargs)
    on_torch = target(torch.from_numpy(labels), spacing, [1, 2], backend="torch", **kwargs)
    assert isinstance(on_torch, torch.Tensor) and on_torch.dtype == torch.float32
    np.testing.assert_allclose(on_torch.numpy(), expected, atol=2e-6)
    from_numpy = target(labels, spacing, [1, 2], backend="torch", **kwargs)
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_allclose(from_numpy, expected, atol=2e-6)
    with pytest.raises(ValueError, match="backend must be one of"):
        target(labels, spacing, [1], backend="gpu")


@pytest.mark.parametrize("per_class", [False, True])
def test_caliva_torch_backend_equals_edt_backend(make_blobs, per_class):
    for labels, spacing in _target_cases(make_blobs):
        _assert_torch_backend_equals_edt(caliva_penalty, labels, spacing, per_class=per_class)


@pytest.mark.parametrize("neighbours", ["full", "faces"])
def test_ni_dm_torch_backend_equals_edt_backend(make_blobs, neighbours):
    for labels, spacing in _target_cases(make_blobs):
        connectivity = None if neighbours == "full" else {2: 4, 3: 6}[len(spacing)]
        for offset in (None, 1.5):
            _assert_torch_backend_equals_edt(ni_dm, labels, spacing, connectivity=connectivity, offset=offset)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("target", [caliva_penalty, ni_dm])
def test_auto_backend_stays_on_the_gpu(make_blobs, target):
    labels, spacing = _target_cases(make_blobs)[0]
    on_gpu = torch.from_numpy(labels).to("cuda")
    phi = target(on_gpu, spacing, [1, 2])
    assert phi.device == on_gpu.device
    np.testing.assert_allclose(phi.cpu().numpy(), target(labels, spacing, [1, 2]), atol=2e-6)
