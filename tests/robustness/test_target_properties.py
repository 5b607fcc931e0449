"""Property tests: every distance target of ``nnunet_sdm.distance`` (and the HD loss's ``boundary_distance``)
is finite and within its documented range on empty, full, single-voxel, noisy and blocky label maps,
2D and 3D, with random and anisotropic (5 x 0.7 x 0.7 mm) spacings."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnunet_sdm.distance import (
    caliva_penalty,
    ni_dm,
    normalise_xue,
    signed_distance,
    signed_distance_masks,
    truncate,
)
from nnunet_sdm.losses.hausdorff import boundary_distance
from tests.robustness.strategies import Case, cases

SETTINGS = settings(max_examples=30, deadline=None, database=None)


def diagonal(case: Case) -> float:
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(case.labels.shape[1:], case.spacing)))


def labels_as(case: Case, container: str):
    return case.labels.numpy() if container == "numpy" else case.labels


def as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


@SETTINGS
@given(cases(), st.sampled_from(["edt", "torch"]), st.sampled_from(["numpy", "torch"]))
def test_signed_distance_is_finite_bounded_and_its_sign_is_the_mask(case, backend, container):
    sdm = as_tensor(
        signed_distance(
            labels_as(case, container), case.spacing, case.classes, backend=backend, max_chunk_elements=61
        )
    )
    assert sdm.dtype == torch.float32 and torch.isfinite(sdm).all()
    d = diagonal(case)
    assert (sdm.abs() <= d * (1 + 1e-6)).all()
    assert (sdm.abs() >= min(case.spacing) * (1 - 1e-6)).all()  # no zeros: the sign alone is the mask
    assert torch.equal(sdm < 0, case.onehot.bool())
    for b in range(case.labels.shape[0]):
        for k, c in enumerate(case.classes):
            mask = case.labels[b] == c
            if not mask.any():
                assert torch.allclose(sdm[b, k], torch.tensor(d))
            elif mask.all():
                assert torch.allclose(sdm[b, k], torch.tensor(-d))


@SETTINGS
@given(cases(), st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_normalise_xue_is_in_minus_one_one_and_keeps_the_sign(case, dtype):
    sdm = signed_distance(case.labels, case.spacing, case.classes).to(dtype)
    out = normalise_xue(sdm, case.spatial_dims)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert ((out >= -1) & (out <= 1)).all()
    assert torch.equal(out < 0, sdm < 0) and not (out == 0).any()
    flat = out.reshape(*out.shape[:2], -1)
    inside = (sdm < 0).reshape(*out.shape[:2], -1)
    absent, full = ~inside.any(-1), inside.all(-1)
    assert (flat[absent] == 1).all() and (flat[full] == -1).all()


@SETTINGS
@given(cases(), st.sampled_from([1e-6, 0.7, 10.0, 1e6]), st.sampled_from([torch.float32, torch.bfloat16]))
def test_truncate_is_in_minus_one_one_and_keeps_the_sign(case, tau, dtype):
    sdm = signed_distance(case.labels, case.spacing, case.classes).to(dtype)
    out = truncate(sdm, tau)
    assert torch.isfinite(out).all() and ((out >= -1) & (out <= 1)).all()
    assert torch.equal(out < 0, sdm < 0) and not (out == 0).any()


@SETTINGS
@given(
    cases(),
    st.sampled_from([None, 0.1, 1.0, 7.0]),
    st.sampled_from(["numpy", "torch"]),
    st.sampled_from(["edt", "torch"]),
)
def test_ni_dm_is_in_zero_one_and_zero_exactly_outside_the_class(case, offset, container, backend):
    phi = as_tensor(
        ni_dm(labels_as(case, container), case.spacing, case.classes, offset=offset, backend=backend)
    )
    assert phi.dtype == torch.float32 and torch.isfinite(phi).all()
    assert ((phi >= 0) & (phi <= 1)).all()
    inside = case.onehot.bool()
    assert (phi[~inside] == 0).all() and (phi[inside] > 0).all()
    other = "edt" if backend == "torch" else "torch"
    twin = as_tensor(ni_dm(case.labels, case.spacing, case.classes, offset=offset, backend=other))
    torch.testing.assert_close(phi, twin, atol=2e-6, rtol=0)


@SETTINGS
@given(cases(), st.booleans(), st.sampled_from(["numpy", "torch"]), st.sampled_from(["edt", "torch"]))
def test_caliva_penalty_is_in_zero_one(case, per_class, container, backend):
    phi = as_tensor(
        caliva_penalty(
            labels_as(case, container), case.spacing, case.classes, per_class=per_class, backend=backend
        )
    )
    channels = case.num_classes if per_class else 1
    assert phi.shape == (case.labels.shape[0], channels, *case.labels.shape[1:])
    assert phi.dtype == torch.float32 and torch.isfinite(phi).all()
    assert ((phi >= 0) & (phi <= 1)).all()
    other = "edt" if backend == "torch" else "torch"
    twin = as_tensor(
        caliva_penalty(case.labels, case.spacing, case.classes, per_class=per_class, backend=other)
    )
    torch.testing.assert_close(phi, twin, atol=2e-6, rtol=0)


@SETTINGS
@given(cases())
def test_boundary_distance_is_non_negative_and_zero_without_boundary(case):
    masks = case.onehot.bool()
    distance = boundary_distance(masks, case.spacing)
    assert distance.dtype == torch.float32 and torch.isfinite(distance).all() and (distance >= 0).all()
    flat = masks.reshape(*masks.shape[:2], -1)
    no_boundary = ~(flat.any(-1) & ~flat.all(-1))
    assert (distance.reshape(*masks.shape[:2], -1)[no_boundary] == 0).all()
    # masks with overlapping regions (nnU-Net region style) as well: each channel on its own
    sdm = signed_distance_masks(masks | masks.flip(1), case.spacing)
    assert torch.isfinite(sdm).all() and torch.equal(sdm < 0, masks | masks.flip(1))
