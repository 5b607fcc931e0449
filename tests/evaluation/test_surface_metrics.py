"""Surface metrics: hand-checked cases, conventions, and a brute-force DeepMind reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nnunet_sdm.evaluation import (
    assd,
    compute_average_surface_distance,
    compute_robust_hausdorff,
    compute_surface_dice_at_tolerance,
    compute_surface_distances,
    dice,
    hd95,
    image_diagonal_mm,
    nsd,
    surface_metrics,
    surfel_area_table,
)

SQ2, SQ3 = math.sqrt(2), math.sqrt(3)


def _corner_area(s):
    return math.sqrt((s[1] * s[2]) ** 2 + (s[0] * s[2]) ** 2 + (s[0] * s[1]) ** 2) / 8


def _edge_area(s, axis):
    """Surfel on a box edge parallel to ``axis``: a 1 x 1/sqrt(2) chamfer strip, scaled."""
    a, b = (d for d in range(3) if d != axis)
    return 0.5 * s[axis] * math.hypot(s[a], s[b])


# --------------------------------------------------------------------------------------------------
# surfel areas
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.3, 1.7, 5.0)])
def test_area_table_entries_by_hand(spacing):
    s = spacing
    table = surfel_area_table(s)
    assert table.shape == (256,)
    assert table[0] == table[255] == 0
    # one inside voxel, at offset (1, 1, 1) (bit 1) or (0, 0, 0) (bit 128): a corner triangle
    assert table[1] == pytest.approx(_corner_area(s), rel=1e-12)
    assert table[128] == pytest.approx(_corner_area(s), rel=1e-12)
    # bits 1+2+4+8: the four voxels with axis-0 offset 1 -> a flat face perpendicular to axis 0
    assert table[15] == pytest.approx(s[1] * s[2], rel=1e-12)
    # bits 1+4+16+64: the four voxels with axis-2 offset 1 -> a flat face perpendicular to axis 2
    assert table[1 + 4 + 16 + 64] == pytest.approx(s[0] * s[1], rel=1e-12)
    # bits 1+2: voxels (1,1,1), (1,1,0) -> a chamfer along axis 2
    assert table[3] == pytest.approx(_edge_area(s, 2), rel=1e-12)
    # a code and its complement share one surface
    np.testing.assert_allclose(table, table[::-1], rtol=1e-12)


def test_area_table_pentagon_unit_spacing():
    # bits 1+2+4: an L of three voxels on a face. Midpoint pentagon split into a triangle of area 1/2
    # (in the plane x0 = 1/2) plus two triangles with normals along (1, 1, 1): sqrt(3)/4 + sqrt(3)/8.
    assert surfel_area_table((1, 1, 1))[7] == pytest.approx(0.5 + SQ3 / 4 + SQ3 / 8, rel=1e-12)


def test_contour_length_table_2d():
    s0, s1 = 0.7, 2.0
    table = surfel_area_table((s0, s1))
    diag = 0.5 * math.hypot(s0, s1)
    expected = {0: 0, 1: diag, 2: diag, 3: s1, 4: diag, 5: s0, 6: 2 * diag, 7: diag, 8: diag, 9: 2 * diag}
    expected.update({10: s0, 11: diag, 12: s1, 13: diag, 14: diag, 15: 0})
    np.testing.assert_allclose(table, [expected[c] for c in range(16)], rtol=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.5, 1.0, 2.0)])
@pytest.mark.parametrize("size", [(1, 1, 1), (4, 4, 4), (3, 5, 7)])
def test_total_area_of_a_box(spacing, size):
    s, n = spacing, size
    mask = np.zeros(tuple(k + 4 for k in n), dtype=bool)
    mask[2 : 2 + n[0], 2 : 2 + n[1], 2 : 2 + n[2]] = True
    faces = 2 * ((n[1] - 1) * (n[2] - 1) * s[1] * s[2] + (n[0] - 1) * (n[2] - 1) * s[0] * s[2])
    faces += 2 * (n[0] - 1) * (n[1] - 1) * s[0] * s[1]
    edges = 4 * sum((n[a] - 1) * _edge_area(s, a) for a in range(3))
    expected = faces + edges + 8 * _corner_area(s)
    sd = compute_surface_distances(mask, mask, s)
    assert sd.surfel_areas_gt.sum() == pytest.approx(expected, rel=1e-12)
    assert np.all(sd.distances_gt_to_pred == 0)


# --------------------------------------------------------------------------------------------------
# hand-checked distances
# --------------------------------------------------------------------------------------------------
def _shifted_cubes(shift_axis=0, n=4):
    gt = np.zeros((10, 10, 10), dtype=bool)
    gt[2 : 2 + n, 2 : 2 + n, 2 : 2 + n] = True
    return gt, np.roll(gt, 1, axis=shift_axis)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0)])
def test_cubes_offset_by_one_voxel(spacing):
    """4^3 cubes, the prediction shifted by one voxel along axis 0 (the finest axis).

    Surfels are the corners on the shell of the 5^3 corner grid. On each surface, the face left
    behind (25 corners: 9 face + 12 edge + 4 corner surfels) and the 9 interior corners of the
    opposite face are one voxel (s0 mm) from the other surface; all other surfels lie on it.
    """
    s = spacing
    gt, pred = _shifted_cubes()
    corner, edge1, edge2 = _corner_area(s), _edge_area(s, 1), _edge_area(s, 2)
    far = 9 * s[1] * s[2] + 6 * edge1 + 6 * edge2 + 4 * corner + 9 * s[1] * s[2]
    faces = 2 * 9 * (s[1] * s[2] + s[0] * s[2] + s[0] * s[1])
    total = faces + 12 * (_edge_area(s, 0) + edge1 + edge2) + 8 * corner
    fraction = far / total  # area fraction at distance s0, identical on both surfaces by symmetry

    sd = compute_surface_distances(gt, pred, s)
    assert sd.surfel_areas_gt.sum() == pytest.approx(total, rel=1e-12)
    assert set(np.round(sd.distances_gt_to_pred, 9)) == {0.0, s[0]}
    assert compute_average_surface_distance(sd) == pytest.approx((s[0] * fraction, s[0] * fraction), rel=1e-9)

    m = surface_metrics(gt, pred, s, tolerances=(s[0] / 2, s[0]))
    assert m["Dice"] == pytest.approx(2 * 48 / 128)
    assert m["HD95"] == pytest.approx(s[0], rel=1e-12)  # fraction > 5 %
    assert m["ASSD"] == pytest.approx(s[0] * fraction, rel=1e-9)
    assert m[f"NSD@{s[0] / 2}mm"] == pytest.approx(1 - fraction, rel=1e-9)
    assert m[f"NSD@{s[0]}mm"] == 1.0  # distance == tolerance counts as inside


def test_squares_offset_by_one_pixel_2d():
    """4x4 squares shifted by one pixel: exactly half of the contour length is at distance 1."""
    gt = np.zeros((10, 10), dtype=bool)
    gt[2:6, 2:6] = True
    pred = np.roll(gt, 1, axis=0)
    sd = compute_surface_distances(gt, pred, (1.0, 1.0))
    assert sd.surfel_areas_gt.sum() == pytest.approx(12 + 2 * SQ2)
    m = surface_metrics(gt, pred, (1.0, 1.0), tolerances=(0.5, 1.0))
    assert m["ASSD"] == pytest.approx(0.5, rel=1e-12)
    assert m["HD95"] == pytest.approx(1.0)
    assert m["NSD@0.5mm"] == pytest.approx(0.5, rel=1e-12)
    assert m["NSD@1.0mm"] == 1.0
    assert dice(gt, pred) == pytest.approx(2 * 12 / 32)


def test_single_voxel_far_away_dominates_hd100_not_hd95():
    gt = np.zeros((30, 30, 30), dtype=bool)
    gt[5:20, 5:20, 5:20] = True
    pred = gt.copy()
    pred[27, 27, 27] = True  # a tiny false positive beyond the corner of the cube (corner grid 5..20)
    sd = compute_surface_distances(gt, pred, (1.0, 1.0, 1.0))
    assert compute_robust_hausdorff(sd, 95) == 0.0
    assert compute_robust_hausdorff(sd, 100) == pytest.approx(math.sqrt(3 * 8**2))  # far corner of the voxel


def test_symmetry_under_swapping_gt_and_pred():
    rng = np.random.default_rng(3)
    a = rng.random((9, 11, 8)) < 0.3
    b = rng.random((9, 11, 8)) < 0.3
    s = (1.5, 0.7, 1.1)
    ab, ba = surface_metrics(a, b, s, (0.7, 1.5)), surface_metrics(b, a, s, (0.7, 1.5))
    assert ab == pytest.approx(ba, rel=1e-12)
    sd_ab, sd_ba = compute_surface_distances(a, b, s), compute_surface_distances(b, a, s)
    assert compute_average_surface_distance(sd_ab) == pytest.approx(
        compute_average_surface_distance(sd_ba)[::-1]
    )


def test_identical_masks_are_perfect():
    rng = np.random.default_rng(0)
    a = rng.random((7, 8, 9)) < 0.4
    m = surface_metrics(a, a.copy(), (2.0, 1.0, 0.5), (1.0,))
    assert m == {"Dice": 1.0, "HD95": 0.0, "ASSD": 0.0, "NSD@1.0mm": 1.0}


# --------------------------------------------------------------------------------------------------
# empty masks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_conventions(ndim):
    shape, s = (6, 7, 8)[:ndim], (2.0, 1.0, 0.5)[:ndim]
    empty, full = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    full[(slice(1, 4),) * ndim] = True
    diagonal = math.sqrt(sum((n * v) ** 2 for n, v in zip(shape, s)))
    assert image_diagonal_mm(shape, s) == pytest.approx(diagonal)

    both = surface_metrics(empty, empty, s, (1.0,))
    assert both == {"Dice": 1.0, "HD95": 0.0, "ASSD": 0.0, "NSD@1.0mm": 1.0}
    for gt, pred in ((empty, full), (full, empty)):
        one = surface_metrics(gt, pred, s, (1.0,))
        assert one == {"Dice": 0.0, "HD95": diagonal, "ASSD": diagonal, "NSD@1.0mm": 0.0}
        assert surface_metrics(gt, pred, s, (1.0,), empty_distance=123.0)["HD95"] == 123.0
        assert hd95(gt, pred, s) == assd(gt, pred, s) == diagonal
        assert nsd(gt, pred, s, 2.0) == 0.0
    assert dice(empty, empty) == 1.0 and nsd(empty, empty, s, 1.0) == 1.0
    assert hd95(empty, empty, s) == assd(empty, empty, s) == 0.0


def test_raw_deepmind_functions_keep_inf_and_nan():
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    sd = compute_surface_distances(full, empty, (1, 1, 1))
    assert np.all(np.isinf(sd["distances_gt_to_pred"])) and sd["distances_pred_to_gt"].size == 0
    assert compute_robust_hausdorff(sd, 95) == math.inf
    assert compute_surface_dice_at_tolerance(sd, 1.0) == 0.0
    sd = compute_surface_distances(empty, empty, (1, 1, 1))
    assert math.isnan(compute_surface_dice_at_tolerance(sd, 1.0))
    assert all(math.isnan(v) for v in compute_average_surface_distance(sd))


def test_input_errors():
    a = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(TypeError, match="boolean"):
        compute_surface_distances(a.astype(np.uint8), a, (1, 1, 1))
    with pytest.raises(ValueError, match="differ in shape"):
        compute_surface_distances(a, a[:3], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        compute_surface_distances(a, a, (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        compute_surface_distances(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="2D or 3D"):
        compute_surface_distances(a[0, 0], a[0, 0], (1,))


# --------------------------------------------------------------------------------------------------
# brute-force reference
# --------------------------------------------------------------------------------------------------
def _reference(gt: np.ndarray, pred: np.ndarray, spacing, tolerances, percents):
    """Slow, independent implementation of DeepMind's algorithm on the full (uncropped) corner grid.

    Surfel areas come from ``surfel_area_table``, which the tests above check by hand.
    """
    ndim = gt.ndim
    table = surfel_area_table(spacing)
    full = (1 << (1 << ndim)) - 1
    offsets = list(itertools.product((0, 1), repeat=ndim))
    weights = [1 << ((1 << ndim) - 1 - int("".join(map(str, o)), 2)) for o in offsets]

    def surfels(mask):
        points, areas = [], []
        for corner in itertools.product(*(range(n + 1) for n in mask.shape)):
            code = 0
            for offset, weight in zip(offsets, weights):
                voxel = tuple(c - 1 + o for c, o in zip(corner, offset))
                if all(0 <= v < n for v, n in zip(voxel, mask.shape)) and mask[voxel]:
                    code += weight
            if code not in (0, full):
                points.append(corner)
                areas.append(table[code])
        return np.array(points, dtype=float).reshape(-1, ndim), np.array(areas)

    def directed(p, q):
        delta = (p[:, None, :] - q[None, :, :]) * np.asarray(spacing)
        return np.sqrt((delta**2).sum(-1)).min(axis=1)

    p_gt, a_gt = surfels(gt)
    p_pred, a_pred = surfels(pred)
    d_gt, d_pred = directed(p_gt, p_pred), directed(p_pred, p_gt)

    def percentile(d, a, percent):
        pairs = sorted(zip(d, a))
        cumulative = 0.0
        for distance, area in pairs:
            cumulative += area
            if cumulative / a.sum() >= percent / 100:
                return distance
        return pairs[-1][0]

    result = {f"HD{p}": max(percentile(d_gt, a_gt, p), percentile(d_pred, a_pred, p)) for p in percents}
    result["ASD_gt"] = (d_gt * a_gt).sum() / a_gt.sum()
    result["ASD_pred"] = (d_pred * a_pred).sum() / a_pred.sum()
    result["ASSD"] = ((d_gt * a_gt).sum() + (d_pred * a_pred).sum()) / (a_gt.sum() + a_pred.sum())
    for t in tolerances:
        inside = a_gt[d_gt <= t].sum() + a_pred[d_pred <= t].sum()
        result[f"NSD{t}"] = inside / (a_gt.sum() + a_pred.sum())
    return result


def _random_mask(rng, shape):
    mask = rng.random(shape) < rng.uniform(0.05, 0.4)
    if not mask.any():
        mask[tuple(n // 2 for n in shape)] = True
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_reference_3d(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 9, size=3))
    spacing = tuple(float(v) for v in rng.choice([0.5, 0.8, 1.0, 1.25, 2.5], size=3))
    gt = np.zeros((shape[0] + 4, shape[1] + 3, shape[2] + 2), dtype=bool)
    pred = gt.copy()
    gt[1 : 1 + shape[0], 2 : 2 + shape[1], : shape[2]] = _random_mask(rng, shape)
    pred[3 : 3 + shape[0], 1 : 1 + shape[1], 2 : 2 + shape[2]] = _random_mask(rng, shape)
    tolerances = (spacing[0], 1.0, 2.0, min(spacing) * 1.5)
    ref = _reference(gt, pred, spacing, tolerances, (50, 95, 100))

    sd = compute_surface_distances(gt, pred, spacing)
    for p in (50, 95, 100):
        assert compute_robust_hausdorff(sd, p) == pytest.approx(ref[f"HD{p}"], abs=1e-6)
    assert compute_average_surface_distance(sd) == pytest.approx((ref["ASD_gt"], ref["ASD_pred"]), abs=1e-6)
    for t in tolerances:
        assert compute_surface_dice_at_tolerance(sd, t) == pytest.approx(ref[f"NSD{t}"], abs=1e-6)
    m = surface_metrics(gt, pred, spacing, tolerances)
    assert m["HD95"] == pytest.approx(ref["HD95"], abs=1e-6)
    assert m["ASSD"] == pytest.approx(ref["ASSD"], abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_reference_2d(seed):
    rng = np.random.default_rng(100 + seed)
    spacing = tuple(float(v) for v in rng.choice([0.5, 0.8, 1.0, 2.5], size=2))
    gt, pred = _random_mask(rng, (14, 11)), _random_mask(rng, (14, 11))
    tolerances = (spacing[1], 1.0, 2.0)
    ref = _reference(gt, pred, spacing, tolerances, (95,))
    m = surface_metrics(gt, pred, spacing, tolerances)
    assert m["HD95"] == pytest.approx(ref["HD95"], abs=1e-6)
    assert m["ASSD"] == pytest.approx(ref["ASSD"], abs=1e-6)
    for t in tolerances:
        assert m[f"NSD@{t}mm"] == pytest.approx(ref[f"NSD{t}"], abs=1e-6)
