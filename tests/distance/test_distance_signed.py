"""signed_distance / signed_distance_masks against scipy's exact EDT, edge cases and argument checks."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import edt
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

import nnunet_sdm.distance.signed as signed_module
from nnunet_sdm.distance import label_masks, signed_distance, signed_distance_masks

BACKENDS = ["edt", "torch"]
TOL = 1e-4  # mm


def diag(shape, spacing):
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def assert_valid_sdm(sdm, labels, classes):
    sdm = sdm.numpy() if isinstance(sdm, torch.Tensor) else sdm
    assert sdm.dtype == np.float32
    assert np.isfinite(sdm).all()
    for k, c in enumerate(classes):
        np.testing.assert_array_equal(sdm[k] < 0, labels == c)


# --- facts about the edt package the CPU path relies on ------------------------------------------


def test_edt_anisotropy_is_in_array_axis_order():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9, 11)) > 0.7
    spacing = (3.0, 0.8, 0.5)
    ref = distance_transform_edt(mask, sampling=spacing)
    same = edt.edt(np.ascontiguousarray(mask), anisotropy=spacing, black_border=False, parallel=1)
    reversed_ = edt.edt(np.ascontiguousarray(mask), anisotropy=spacing[::-1], black_border=False, parallel=1)
    assert np.abs(same - ref).max() < TOL
    assert np.abs(reversed_ - ref).max() > 0.1


def test_edt_multilabel_gives_distance_to_nearest_different_label():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (8, 9, 10)).astype(np.uint8)
    spacing = (2.0, 1.0, 0.7)
    dist = edt.edt(labels, anisotropy=spacing, black_border=False, parallel=1)
    for c in (1, 2, 3):  # label 0 is edt's background (distance 0), hence the 1/2 codes in _edt_cpu
        mask = labels == c
        assert np.abs(dist[mask] - distance_transform_edt(mask, sampling=spacing)[mask]).max() < TOL


# --- exactness against scipy ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_anisotropic_multiclass_3d(backend, make_blobs, sdm_reference):
    rng = np.random.default_rng(2)
    spacing = (3.0, 0.8, 0.6)
    labels = make_blobs(rng, (24, 40, 36), spacing, n_classes=4, n_blobs=3)
    labels[labels == 4] = 7  # a label value that is not requested below
    classes = [1, 2, 3, 0]
    assert all((labels == c).any() for c in classes)
    sdm = signed_distance(labels, spacing, classes, backend=backend)
    assert sdm.shape == (4, 24, 40, 36)
    assert np.abs(sdm - sdm_reference(labels, spacing, classes)).max() < TOL
    assert_valid_sdm(sdm, labels, classes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_torch_input_matches_scipy(backend, make_blobs, sdm_reference):
    rng = np.random.default_rng(3)
    spacing = (1.5, 0.9, 1.2)
    labels = np.stack([make_blobs(rng, (16, 20, 18), spacing, n_classes=3) for _ in range(3)])
    classes = [1, 2, 3]
    sdm = signed_distance(torch.from_numpy(labels).long(), spacing, classes, backend=backend)
    assert isinstance(sdm, torch.Tensor) and sdm.dtype == torch.float32 and sdm.device == torch.device("cpu")
    assert sdm.shape == (3, 3, 16, 20, 18)
    for b in range(3):
        assert np.abs(sdm[b].numpy() - sdm_reference(labels[b], spacing, classes)).max() < TOL
        assert_valid_sdm(sdm[b], labels[b], classes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_2d(backend, make_blobs, sdm_reference):
    rng = np.random.default_rng(4)
    spacing = (0.7, 1.9)
    labels = make_blobs(rng, (50, 31), spacing, n_classes=3)
    sdm = signed_distance(labels, spacing, [0, 1, 2, 3], backend=backend)
    assert sdm.shape == (4, 50, 31)
    assert np.abs(sdm - sdm_reference(labels, spacing, [0, 1, 2, 3])).max() < TOL
    assert_valid_sdm(sdm, labels, [0, 1, 2, 3])
    batched = signed_distance(labels[None].repeat(2, axis=0), spacing, [1], backend=backend)
    assert batched.shape == (2, 1, 50, 31)
    np.testing.assert_array_equal(batched[1, 0], sdm[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_highly_anisotropic_spacing(backend, make_blobs, sdm_reference):
    rng = np.random.default_rng(5)
    spacing = (5.0, 0.7, 0.7)
    labels = make_blobs(rng, (10, 48, 44), spacing, n_classes=2)
    sdm = signed_distance(labels, spacing, [1, 2], backend=backend)
    assert np.abs(sdm - sdm_reference(labels, spacing, [1, 2])).max() < TOL
    assert_valid_sdm(sdm, labels, [1, 2])
    # inside values are <= -min(spacing), outside >= min(spacing)
    assert (np.abs(sdm) >= 0.7 - 1e-6).all()


@pytest.mark.parametrize("chunk", [1, 64, 5_000, 10**9])
def test_torch_chunk_size_does_not_change_the_result(chunk, make_blobs, sdm_reference):
    rng = np.random.default_rng(6)
    spacing = (2.0, 0.8, 0.8)
    labels = make_blobs(rng, (12, 30, 26), spacing, n_classes=2)
    sdm = signed_distance(labels, spacing, [1, 2], backend="torch", max_chunk_elements=chunk)
    assert np.abs(sdm - sdm_reference(labels, spacing, [1, 2])).max() < TOL


# --- edge cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_absent_class_is_plus_diagonal_everywhere(backend):
    labels = np.zeros((6, 7, 8), dtype=np.uint8)
    labels[2:4, 2:5, 3:6] = 1
    spacing = (2.0, 1.0, 0.5)
    sdm = signed_distance(labels, spacing, [2], backend=backend)
    np.testing.assert_allclose(sdm, diag((6, 7, 8), spacing), rtol=1e-6)
    assert (sdm > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_filling_the_array_is_minus_diagonal_everywhere(backend):
    labels = np.full((5, 6, 7), 3, dtype=np.int32)
    spacing = (1.0, 2.0, 3.0)
    sdm = signed_distance(labels, spacing, [3, 0], backend=backend)
    np.testing.assert_allclose(sdm[0], -diag((5, 6, 7), spacing), rtol=1e-6)
    np.testing.assert_allclose(sdm[1], diag((5, 6, 7), spacing), rtol=1e-6)
    # the diagonal is larger than any in-array distance
    assert diag((5, 6, 7), spacing) > math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip((5, 6, 7), spacing)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_voxel(backend, sdm_reference):
    labels = np.zeros((5, 6, 7), dtype=np.int64)
    labels[0, 5, 3] = 1  # at the border
    spacing = (3.0, 0.8, 0.8)
    sdm = signed_distance(labels, spacing, [1], backend=backend)
    assert np.abs(sdm - sdm_reference(labels, spacing, [1])).max() < TOL
    assert sdm[0, 0, 5, 3] == pytest.approx(-0.8)  # nearest outside voxel: one in-plane step
    assert (sdm[0] < 0).sum() == 1
    # the outside distance is the Euclidean distance to the voxel centre
    assert sdm[0, 4, 0, 0] == pytest.approx(
        math.sqrt((4 * 3.0) ** 2 + (5 * 0.8) ** 2 + (3 * 0.8) ** 2), abs=TOL
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_voxel_thin_structures(backend, sdm_reference):
    spacing = (2.5, 0.6, 0.9)
    labels = np.zeros((9, 12, 10), dtype=np.int16)
    labels[4, :, :] = 1  # a 1-voxel-thin plane across the array (across the coarse axis)
    labels[:, 6, 2] = 2  # a 1-voxel-thin line crossing it
    labels[1:8, 1, 1:9] = 3  # a thin sheet along the coarse axis
    sdm = signed_distance(labels, spacing, [1, 2, 3], backend=backend)
    assert np.abs(sdm - sdm_reference(labels, spacing, [1, 2, 3])).max() < TOL
    assert_valid_sdm(sdm, labels, [1, 2, 3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_absent_in_one_batch_member_only(backend, sdm_reference):
    labels = np.zeros((2, 6, 8, 8), dtype=np.int16)
    labels[0, 2:4, 3:6, 2:5] = 1
    spacing = (2.0, 1.0, 1.0)
    sdm = signed_distance(torch.from_numpy(labels), spacing, [1], backend=backend).numpy()
    assert np.abs(sdm[0] - sdm_reference(labels[0], spacing, [1])).max() < TOL
    np.testing.assert_allclose(sdm[1], diag((6, 8, 8), spacing), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("as_torch", [False, True])
def test_empty_batch(backend, as_torch):
    labels = np.zeros((0, 4, 5, 6), dtype=np.int16)
    x = torch.from_numpy(labels) if as_torch else labels
    sdm = signed_distance(x, (1.0, 1.0, 1.0), [1, 2], backend=backend)
    assert tuple(sdm.shape) == (0, 2, 4, 5, 6)
    assert isinstance(sdm, torch.Tensor) == as_torch
    masks = signed_distance_masks(np.zeros((0, 3, 4, 5), dtype=bool), (1.0, 1.0), backend=backend)
    assert masks.shape == (0, 3, 4, 5) and masks.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_bool_label_map(backend, sdm_reference):
    rng = np.random.default_rng(7)
    labels = rng.random((8, 9, 10)) > 0.6
    spacing = (1.0, 2.0, 0.5)
    sdm = signed_distance(labels, spacing, [1, 0], backend=backend)
    assert np.abs(sdm - sdm_reference(labels.astype(np.int8), spacing, [1, 0])).max() < TOL
    np.testing.assert_array_equal(sdm[0] < 0, labels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_and_negative_label_values(backend, sdm_reference):
    labels = np.zeros((6, 7, 8), dtype=np.int32)
    labels[1:3, 2:5, 2:6] = 1000
    labels[3:5, 1:4, 4:7] = -2
    spacing = (1.0, 1.0, 1.0)
    sdm = signed_distance(labels, spacing, [1000, -2], backend=backend)
    assert np.abs(sdm - sdm_reference(labels, spacing, [1000, -2])).max() < TOL


# --- region masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_overlapping_regions_and_bool_input(backend, make_blobs, sdm_reference):
    rng = np.random.default_rng(8)
    spacing = (2.0, 0.9, 0.9)
    labels = make_blobs(rng, (12, 24, 20), spacing, n_classes=3)
    regions = np.stack([labels > 0, labels >= 2, labels == 3])  # nested, as in nnU-Net region training
    sdm = signed_distance_masks(regions, spacing, backend=backend)
    assert sdm.shape == regions.shape and sdm.dtype == np.float32
    for r in range(3):
        ref = sdm_reference(regions[r].astype(np.int8), spacing, [1])[0]
        assert np.abs(sdm[r] - ref).max() < TOL
        np.testing.assert_array_equal(sdm[r] < 0, regions[r])
    batched = signed_distance_masks(
        torch.from_numpy(np.stack([regions, regions[::-1]])), spacing, backend=backend
    )
    assert batched.shape == (2, 3, 12, 24, 20)
    np.testing.assert_allclose(batched[1, 0].numpy(), sdm[2], atol=TOL)


def test_masks_integer_input_and_2d():
    masks = np.zeros((2, 6, 7), dtype=np.uint8)
    masks[0, 2:4, 1:5] = 1
    masks[1] = 1
    sdm = signed_distance_masks(masks, (1.0, 1.0))
    np.testing.assert_array_equal(sdm[0] < 0, masks[0] == 1)
    np.testing.assert_allclose(sdm[1], -diag((6, 7), (1.0, 1.0)), rtol=1e-6)


# --- containers, devices and backend choice --------------------------------------------------------


def test_auto_uses_edt_for_numpy_and_cpu_tensors(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch backend must not be used for CPU inputs with backend='auto'")

    monkeypatch.setattr(signed_module, "signed_edt_torch", forbidden)
    labels = np.zeros((4, 5, 6), dtype=np.int16)
    labels[1, 2, 3] = 1
    assert isinstance(signed_distance(labels, (1, 1, 1), [1]), np.ndarray)
    assert isinstance(signed_distance(torch.from_numpy(labels), (1, 1, 1), [1]), torch.Tensor)


def test_torch_and_edt_backends_agree_on_numpy_input(make_blobs):
    rng = np.random.default_rng(9)
    labels = make_blobs(rng, (10, 14, 12), (1.2, 1.0, 0.8), n_classes=2)
    a = signed_distance(labels, (1.2, 1.0, 0.8), [1, 2], backend="edt")
    b = signed_distance(labels, (1.2, 1.0, 0.8), [1, 2], backend="torch")
    assert isinstance(b, np.ndarray)
    assert np.abs(a - b).max() < TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["auto", "torch", "edt"])
def test_cuda_tensor_stays_on_device(backend, make_blobs, sdm_reference):
    rng = np.random.default_rng(10)
    labels = make_blobs(rng, (10, 14, 12), (1.2, 1.0, 0.8), n_classes=2)
    sdm = signed_distance(torch.from_numpy(labels).to("cuda"), (1.2, 1.0, 0.8), [1, 2], backend=backend)
    assert sdm.device.type == "cuda"
    assert np.abs(sdm.cpu().numpy() - sdm_reference(labels, (1.2, 1.0, 0.8), [1, 2])).max() < TOL


# --- argument checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing entries must be finite and > 0"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "spacing entries must be finite and > 0"),
        ({"spacing": (1.0,)}, "spacing must have 2"),
        ({"spacing": 1.0}, "spacing must be a sequence"),
        ({"classes": []}, "classes must contain at least one"),
        ({"classes": [1, 1]}, "classes must not contain duplicates"),
        ({"classes": [1.5]}, "classes must contain integer"),
        ({"classes": 1}, "classes must be a sequence"),
        ({"backend": "scipy"}, "backend must be one of"),
        ({"max_chunk_elements": 0}, "max_chunk_elements must be an integer >= 1"),
    ],
)
def test_signed_distance_argument_checks(kwargs, match):
    args = {"spacing": (1.0, 1.0, 1.0), "classes": [1]} | kwargs
    labels = np.zeros((3, 4, 5), dtype=np.int16)
    with pytest.raises(ValueError, match=match):
        signed_distance(labels, args.pop("spacing"), args.pop("classes"), **args)


def test_signed_distance_rejects_float_labels_and_non_arrays():
    with pytest.raises(ValueError, match="labels must have an integer or bool dtype"):
        signed_distance(np.zeros((3, 4, 5), dtype=np.float32), (1, 1, 1), [1])
    with pytest.raises(ValueError, match="labels must be a numpy array or a torch tensor"):
        signed_distance([[0, 1], [1, 0]], (1, 1), [1])
    with pytest.raises(ValueError, match="labels must have shape"):
        signed_distance(np.zeros((2, 3, 4, 5), dtype=np.int16), (1, 1), [1])  # 4 dims for 2D spacing
    with pytest.raises(ValueError, match="empty spatial axis"):
        signed_distance(np.zeros((3, 0, 5), dtype=np.int16), (1, 1, 1), [1])


def test_signed_distance_masks_argument_checks():
    with pytest.raises(ValueError, match="masks must have a bool"):
        signed_distance_masks(np.zeros((2, 3, 4, 5), dtype=np.float32), (1, 1, 1))
    with pytest.raises(ValueError, match="masks must have shape"):
        signed_distance_masks(np.zeros((3, 4, 5), dtype=bool), (1, 1, 1))


def test_distance_layer_never_imports_nnunetv2():
    code = "import sys, nnunet_sdm.distance; sys.exit('nnunetv2' in sys.modules)"
    root = str(Path(__file__).resolve().parents[2])
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


@pytest.mark.parametrize("labels", [[1, 2, 3], [2, 5], [1]], ids=["consecutive", "gaps", "one"])
def test_label_masks_are_one_channel_per_class(labels):
    label_map = torch.randint(0, 6, (2, 4, 5, 3), generator=torch.Generator().manual_seed(0))
    masks = label_masks(label_map, labels)
    assert masks.dtype == torch.bool and masks.shape == (2, len(labels), 4, 5, 3)
    assert torch.equal(masks, torch.stack([label_map == c for c in labels], dim=1))
    assert np.array_equal(label_masks(label_map.numpy(), labels), masks.numpy())
