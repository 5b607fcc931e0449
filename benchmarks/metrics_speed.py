"""Speed of the surface metrics (HD95, ASSD, NSD@1mm, NSD@2mm): ours vs MONAI; prints JSON.

Never a timed assertion. One reference/prediction pair of realistic overlapping blobs (an organ made of
three deformed ellipsoids; the prediction shifted by ~1.5 mm, with a smooth boundary error and a small
false-positive blob), 256 x 256 x 128 voxels at spacing (0.8, 0.8, 2.5) mm (numpy axis order), all
four metrics per call, median wall time of ``--repeats`` runs, single-threaded on both sides
(``torch.set_num_threads(1)``, ``edt`` with one thread) unless ``--threads`` says otherwise.

Methods timed in the same run:

* ``ours``: :func:`nnunet_sdm.evaluation.surface_metrics` (one surface-distance pass, all metrics).
* ``monai_subvoxel``: MONAI's DeepMind-style surfels and distances computed ONCE
  (``monai.metrics.utils.get_edge_surface_distance(..., use_subvoxels=True, symmetric=True)``), then the
  DeepMind statistics on them (area-weighted HD95 percentile rule, area-weighted ASSD, NSD). Same
  definitions as ours, so the values must agree: ``same_values`` checks that to 1e-6.
* ``monai_api``: MONAI's public functions as usually called, one call per metric:
  ``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance(symmetric=True)``,
  ``compute_surface_dice(use_subvoxels=True)`` at 1 and 2 mm. Their NSD has our definition; their HD95
  and ASSD do not (boundary *voxels* with unit weights, HD95 a linearly interpolated unweighted
  quantile, ASSD the plain mean of all directed distances), so only NSD is value-checked there and the
  HD95/ASSD differences are reported.

``speedup_*`` = MONAI median time / ours. Acceptance target: ``speedup_vs_monai_subvoxel >= 2``.

Usage: ``python benchmarks/metrics_speed.py [--quick] [--repeats N] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
import warnings

import numpy as np
from scipy import ndimage

from nnunet_sdm.evaluation import surface_metrics

SHAPE = (256, 256, 128)
QUICK_SHAPE = (128, 128, 64)
SPACING = (0.8, 0.8, 2.5)
TOLERANCES = (1.0, 2.0)
TARGET_SPEEDUP = 2.0
METRICS = ("HD95", "ASSD", "NSD@1.0mm", "NSD@2.0mm")


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth random field (unit-ish amplitude): cubic upsampling of a ``cells``^3 normal grid."""
    coarse = rng.normal(size=(cells,) * len(shape))
    field = ndimage.zoom(coarse, [n / cells for n in shape], order=3, mode="nearest", grid_mode=True)
    return field[tuple(slice(0, n) for n in shape)]


def blob_pair(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction masks: overlapping deformed ellipsoids, the prediction perturbed (mm)."""
    rng = np.random.default_rng(seed)
    s = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(shape) * s
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * d for n, d in zip(shape, s)], indexing="ij", sparse=True)

    def implicit(offset_mm: np.ndarray) -> np.ndarray:
        """Signed pseudo-distance (mm, negative inside) of the union of the ellipsoids, shifted."""
        phi = None
        for centre, radii in lobes:
            r = np.sqrt(sum(((g - c - o) / a) ** 2 for g, c, o, a in zip(grids, centre, offset_mm, radii)))
            lobe = (r - 1.0) * radii.min()
            phi = lobe if phi is None else np.minimum(phi, lobe)
        return phi

    lobes = []
    for _ in range(3):
        radii = extent * rng.uniform(0.12, 0.22, size=len(shape))
        centre = extent / 2 + extent * rng.uniform(-0.12, 0.12, size=len(shape))
        lobes.append((centre, radii))
    shape_noise = 4.0 * _smooth_field(shape, rng, 6)  # mm: the organ's own irregularity
    gt = implicit(np.zeros(len(shape))) + shape_noise < 0

    shift = rng.normal(size=len(shape))
    shift *= 1.5 / np.linalg.norm(shift)
    error = 1.2 * _smooth_field(shape, rng, 12)  # mm: smooth boundary error of the prediction
    pred = implicit(shift) + shape_noise + error < 0
    # a small false positive (a few mm across) away from the organ
    centre = extent * np.array([0.15, 0.85, 0.5][: len(shape)])
    r = np.sqrt(sum(((g - c) / 6.0) ** 2 for g, c in zip(grids, centre)))
    pred |= r < 1.0
    return gt, pred


def ours(gt: np.ndarray, pred: np.ndarray, threads: int) -> dict[str, float]:
    values = surface_metrics(gt, pred, SPACING, tolerances=TOLERANCES, threads=threads)
    return {m: values[m] for m in METRICS}


def _deepmind_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    index = min(int(np.searchsorted(cumulative, percent / 100.0)), distances.size - 1)
    return float(distances[order][index])


def monai_subvoxel(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    (edges_pred, edges_gt), (d_pred, d_gt), (areas_pred, areas_gt) = get_edge_surface_distance(
        torch.from_numpy(pred), torch.from_numpy(gt), spacing=SPACING, use_subvoxels=True, symmetric=True
    )
    d_pred, d_gt = d_pred.double().numpy(), d_gt.double().numpy()
    a_pred, a_gt = areas_pred[edges_pred].double().numpy(), areas_gt[edges_gt].double().numpy()
    total = a_pred.sum() + a_gt.sum()
    out = {
        "HD95": max(_deepmind_percentile(d_gt, a_gt, 95), _deepmind_percentile(d_pred, a_pred, 95)),
        "ASSD": float((np.sum(d_gt * a_gt) + np.sum(d_pred * a_pred)) / total),
    }
    for t in TOLERANCES:
        out[f"NSD@{t}mm"] = float((a_gt[d_gt <= t].sum() + a_pred[d_pred <= t].sum()) / total)
    return out


def monai_api(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    y_pred, y = torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None]
    common = {"include_background": True, "spacing": SPACING}
    out = {
        "HD95": float(compute_hausdorff_distance(y_pred, y, percentile=95, **common)),
        "ASSD": float(compute_average_surface_distance(y_pred, y, symmetric=True, **common)),
    }
    for t in TOLERANCES:
        out[f"NSD@{t}mm"] = float(compute_surface_dice(y_pred, y, [t], use_subvoxels=True, **common))
    return out


def _time(function, repeats: int) -> tuple[float, list[float], dict[str, float]]:
    times, values = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        values = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, values


def _agree(a: dict[str, float], b: dict[str, float], keys, tol: float = 1e-6) -> dict:
    diffs = {k: abs(a[k] - b[k]) / max(1.0, abs(b[k])) for k in keys}
    return {"ok": all(d <= tol for d in diffs.values()), "max_rel_diff": max(diffs.values())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SHAPE} pair, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (2 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="threads for edt (ours) and torch (MONAI)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import monai
        import torch
    except ImportError as error:
        raise SystemExit(f"metrics_speed.py compares against MONAI: pip install monai ({error})") from None

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    shape = QUICK_SHAPE if args.quick else SHAPE
    repeats = args.repeats or (2 if args.quick else 5)
    gt, pred = blob_pair(shape, SPACING, seed=args.seed)
    inter = int(np.count_nonzero(gt & pred))

    methods = {
        "ours": lambda: ours(gt, pred, args.threads),
        "monai_subvoxel": lambda: monai_subvoxel(gt, pred),
        "monai_api": lambda: monai_api(gt, pred),
    }
    for function in methods.values():  # warm-up (imports, lookup tables)
        function()
    results = {}
    for name, function in methods.items():
        median, times, values = _time(function, repeats)
        results[name] = {"median_s": median, "times_s": times, "values": values}

    t_ours = results["ours"]["median_s"]
    report = {
        "benchmark": "surface metrics HD95 + ASSD + NSD@1mm + NSD@2mm, one pair",
        "shape": list(shape),
        "spacing_mm": list(SPACING),
        "voxels_gt": int(gt.sum()),
        "voxels_pred": int(pred.sum()),
        "dice": 2 * inter / (int(gt.sum()) + int(pred.sum())),
        "repeats": repeats,
        "threads": args.threads,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
        },
        "methods": results,
        "same_values": {
            "ours_vs_monai_subvoxel": _agree(
                results["ours"]["values"], results["monai_subvoxel"]["values"], METRICS
            ),
            "ours_vs_monai_api_nsd": _agree(
                results["ours"]["values"], results["monai_api"]["values"], ("NSD@1.0mm", "NSD@2.0mm")
            ),
            "monai_api_hd95_assd_differ_by_definition": {
                k: results["monai_api"]["values"][k] - results["ours"]["values"][k] for k in ("HD95", "ASSD")
            },
        },
        "speedup_vs_monai_subvoxel": results["monai_subvoxel"]["median_s"] / t_ours,
        "speedup_vs_monai_api": results["monai_api"]["median_s"] / t_ours,
        "target_speedup": TARGET_SPEEDUP,
    }
    report["meets_target"] = bool(
        report["speedup_vs_monai_subvoxel"] >= TARGET_SPEEDUP
        and math.isfinite(report["speedup_vs_monai_subvoxel"])
    )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
