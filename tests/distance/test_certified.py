"""SDMs under nnU-Net's ignore label: a certified voxel's value is the same for every completion of the
unknown voxels, and the transforms built on it (Xue's normalisation, Calivá's Phi) use certified voxels only."""

from __future__ import annotations

import pytest
import torch

from nnunet_sdm.distance import (
    caliva_penalty,
    caliva_penalty_of_sdm,
    certified_signed_distance,
    normalise_xue,
    signed_distance_masks,
)


def random_case(seed: int, shape=(10, 13, 11), classes: int = 2):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, classes, *shape, dtype=torch.bool)
    for b in range(2):
        for c in range(classes):
            lo = [int(torch.randint(0, n // 2, (1,), generator=generator)) for n in shape]
            hi = [a + int(torch.randint(2, n // 2 + 1, (1,), generator=generator)) for a, n in zip(lo, shape)]
            masks[b, c, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    known = torch.ones(2, 1, *shape, dtype=torch.bool)
    known[0, :, 3:6] = False  # sparse annotation: unlabelled slices
    known[1, :, :, 4:7, 2:9] = False  # and an unlabelled box
    return masks, known, generator


@pytest.mark.parametrize("tau", [None, 2.0], ids=["full", "truncated"])
@pytest.mark.parametrize("seed", range(4))
def test_certified_values_hold_for_every_completion(tau, seed):
    spacing = (2.0, 0.9, 0.7)
    masks, known, generator = random_case(seed)
    sdm, certified = certified_signed_distance(masks, known, spacing, tau=tau)
    assert certified.shape == masks.shape and not certified[~known.expand_as(masks)].any()
    assert certified.any()
    completions = [masks & known, masks | ~known]
    completions += [
        torch.where(known, masks, torch.rand(masks.shape, generator=generator) > 0.5) for _ in range(4)
    ]
    for completion in completions:
        reference = signed_distance_masks(completion, spacing)
        if tau is not None:
            reference = (reference / tau).clamp(-1, 1)
        torch.testing.assert_close(sdm[certified], reference[certified], rtol=0, atol=1e-5)
    # exactness: an uncertified known voxel has two completions that disagree (the bounds)
    lo = signed_distance_masks(masks | ~known, spacing)
    hi = signed_distance_masks(masks & known, spacing)
    if tau is not None:
        lo, hi = (lo / tau).clamp(-1, 1), (hi / tau).clamp(-1, 1)
    assert ((hi - lo)[~certified] > 1e-5).all()


def test_all_known_is_one_plain_transform():
    masks, _, _ = random_case(0)
    sdm, certified = certified_signed_distance(masks, None, (1.0, 1.0, 1.0))
    assert certified is None and torch.equal(sdm, signed_distance_masks(masks, (1.0, 1.0, 1.0)))


def test_unknown_voxels_are_not_background():
    """A class entirely in the unknown part is never "absent": its neighbours are uncertified."""
    masks = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
    known = torch.ones(1, 1, 8, 8, 8, dtype=torch.bool)
    known[:, :, 2:5] = False
    _, certified = certified_signed_distance(masks, known, (1.0, 1.0, 1.0), tau=2.0)
    assert not certified[0, 0, 1].any() and not certified[0, 0, 5].any()  # within tau of the unknown slab
    assert certified[0, 0, 7].all()  # farther than tau: +1 whatever the slab holds


def test_bad_arguments_are_named():
    masks, known, _ = random_case(0)
    with pytest.raises(ValueError, match="masks must be a bool"):
        certified_signed_distance(masks.float(), known, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="known must be a bool tensor"):
        certified_signed_distance(masks, known[:, :, :3], (1.0, 1.0, 1.0))


def test_normalisation_and_penalty_use_certified_voxels_only():
    spacing = (2.0, 0.9, 0.7)
    masks, known, _ = random_case(2)
    sdm, certified = certified_signed_distance(masks, known, spacing)
    normalised = normalise_xue(sdm, 3, mask=certified)
    assert normalised[certified].abs().max() == 1.0  # the largest certified distances map to +-1
    assert torch.equal(normalised < 0, sdm < 0)
    phi = caliva_penalty_of_sdm(sdm, certified=certified, per_class=True)
    assert (phi[~certified] == 0).all() and phi[certified].max() == 1.0
    # without unknown voxels: exactly caliva_penalty of the label map
    labels = torch.zeros(2, *masks.shape[2:], dtype=torch.long)
    for c in range(masks.shape[1]):
        labels[masks[:, c]] = c + 1
    full = signed_distance_masks(torch.stack([labels == c for c in (1, 2)], 1), spacing)
    torch.testing.assert_close(caliva_penalty_of_sdm(full), caliva_penalty(labels, spacing, [1, 2]))
