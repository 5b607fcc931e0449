"""Speed of exact signed distance maps per training patch; prints JSON (never a timed assertion).

Sections (one function each, assembled by ``main``):

* ``sdm_speed``: ms per patch for scipy (``distance_transform_edt`` inside + outside per class), the
  ``edt`` CPU path and the torch path on the CPU, all single-threaded, for the patch shapes and class
  counts below at spacing (3, 0.8, 0.8) with ellipsoid labels (~10-30 % foreground); median of repeats,
  ratios and the max deviation from scipy in mm.

* ``data_pipeline``: mean CPU ms per training sample of nnU-Net's data pipeline (loading, cropping,
  augmentation, deep-supervision down-sampling; one worker, single thread) for the stock
  ``nnUNetTrainer``, ``nnUNetTrainerSDM_Xue2020`` (SDM targets on the training device, so its pipeline is
  stock's) and ``nnUNetTrainerSDM_Xue2020TargetsInLoader`` (targets made in the workers with ``edt``), measured
  in the same run, rounds interleaved and seeded alike (paired), on a synthetic dataset that nnU-Net plans and preprocesses; plus,
  for information, what the on-device targets cost per sample when the training device is this CPU.

Each section takes ``quick`` and returns a JSON-serialisable dict.

Usage: ``python benchmarks/sdm_speed.py [--quick] [--sections sdm_speed ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from nnunet_sdm.distance import signed_distance

SPACING = (3.0, 0.8, 0.8)
PATCH_SHAPES = [(128, 128, 128), (80, 192, 160), (40, 56, 40)]
QUICK_PATCH_SHAPES = [(40, 56, 40)]
CLASS_COUNTS = [1, 3]
ACCEPTANCE = {"shape": [128, 128, 128], "n_classes": 3, "min_speedup_scipy_over_edt": 4.0}


def ellipsoid_labels(
    shape: tuple[int, ...], spacing: tuple[float, ...], n_classes: int, seed: int = 0
) -> np.ndarray:
    """Label map with one ellipsoid per class (labels 1..K), ~20 % foreground in total, in mm space."""
    rng = np.random.default_rng(seed)
    extent = np.array([n * s for n, s in zip(shape, spacing)])
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    # an ellipsoid with semi-axes alpha * extent / 2 fills pi / 6 * alpha^3 of the box
    alpha = (0.2 / n_classes * 6 / math.pi) ** (1 / 3)
    labels = np.zeros(shape, dtype=np.uint8)
    for c in range(1, n_classes + 1):
        radii = alpha * extent / 2 * rng.uniform(0.9, 1.1, size=3)
        centre = rng.uniform(radii, extent - radii)
        inside = sum(((g - c0) / r) ** 2 for g, c0, r in zip(grids, centre, radii)) <= 1.0
        labels[inside & (labels == 0)] = c
    return labels


def scipy_sdm(labels: np.ndarray, spacing: tuple[float, ...], classes: list[int]) -> np.ndarray:
    """Baseline: scipy's exact EDT, one inside and one outside transform per class."""
    out = np.empty((len(classes),) + labels.shape, dtype=np.float32)
    for k, c in enumerate(classes):
        mask = labels == c
        out[k] = np.where(
            mask,
            -distance_transform_edt(mask, sampling=spacing),
            distance_transform_edt(~mask, sampling=spacing),
        )
    return out


def median_ms(
    fns: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Median wall time in ms of each function over ``repeats`` rounds, and each one's last result.

    One untimed warm-up call each, then the functions are timed in turn within every round, so a change
    of machine load affects all of them alike and their ratios stay meaningful.
    """
    results = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}, results


def section_sdm_speed(quick: bool) -> dict:
    """ms per patch: scipy vs the edt CPU path vs the torch path on the CPU, single thread."""
    torch.set_num_threads(1)
    repeats = 2 if quick else 5
    shapes = QUICK_PATCH_SHAPES if quick else PATCH_SHAPES
    rows = []
    for shape in shapes:
        for n_classes in CLASS_COUNTS:
            labels = ellipsoid_labels(shape, SPACING, n_classes)
            classes = list(range(1, n_classes + 1))
            labels_t = torch.from_numpy(labels)
            ms, out = median_ms(
                {
                    "scipy": partial(scipy_sdm, labels, SPACING, classes),
                    "edt": partial(signed_distance, labels, SPACING, classes, backend="edt"),
                    "torch": partial(signed_distance, labels_t, SPACING, classes, backend="torch"),
                },
                repeats,
            )
            scipy_ms, edt_ms, torch_ms = ms["scipy"], ms["edt"], ms["torch"]
            ref, out_edt, out_torch = out["scipy"], out["edt"], out["torch"]
            rows.append(
                {
                    "shape": list(shape),
                    "n_classes": n_classes,
                    "foreground_fraction": round(float((labels > 0).mean()), 3),
                    "scipy_ms": round(scipy_ms, 1),
                    "edt_ms": round(edt_ms, 1),
                    "torch_cpu_ms": round(torch_ms, 1),
                    "ratio_scipy_over_edt": round(scipy_ms / edt_ms, 2),
                    "ratio_scipy_over_torch_cpu": round(scipy_ms / torch_ms, 2),
                    "max_abs_diff_mm_edt": float(np.abs(out_edt - ref).max()),
                    "max_abs_diff_mm_torch": float(np.abs(out_torch.numpy() - ref).max()),
                }
            )
    result: dict = {"spacing": list(SPACING), "repeats": repeats, "threads": 1, "rows": rows}
    target = [
        r for r in rows if r["shape"] == ACCEPTANCE["shape"] and r["n_classes"] == ACCEPTANCE["n_classes"]
    ]
    if target:
        speedup = target[0]["ratio_scipy_over_edt"]
        result["acceptance"] = dict(
            ACCEPTANCE, speedup=speedup, met=speedup >= ACCEPTANCE["min_speedup_scipy_over_edt"]
        )
    return result


PIPELINE_TRAINERS = ["nnUNetTrainer", "nnUNetTrainerSDM_Xue2020", "nnUNetTrainerSDM_Xue2020TargetsInLoader"]
ACCEPTANCE_PIPELINE = {"max_ratio_default_sdm_over_stock": 1.05}


def _prepare_pipeline_dataset(workdir: Path, quick: bool) -> None:
    """Synthetic dataset, planned and preprocessed by nnU-Net (its environment set in os.environ)."""
    from nnunet_sdm.synth import make_synthetic_dataset
    from nnunet_sdm.workflow import nnunet_environment, plan_and_preprocess

    env = nnunet_environment(workdir)
    env.update(nnUNet_compile="f")
    shape = (24, 96, 96) if quick else (48, 160, 160)
    make_synthetic_dataset(env["nnUNet_raw"], dataset_id=991, num_training=6, num_test=0, shape=shape)
    plan_and_preprocess(991, env, workdir / "logs", verify=False, announce=lambda _: None)
    # data loading in this process (SingleThreadedAugmenter); nnU-Net's planner cannot take 0
    os.environ.update(env, nnUNet_n_proc_DA="0")


def section_data_pipeline(quick: bool) -> dict:
    """CPU ms per training sample of each trainer's data pipeline, interleaved rounds, one thread."""
    import tempfile

    from nnunetv2.run.run_training import get_trainer_from_args

    torch.set_num_threads(1)
    rounds, batches_per_round = (3, 2) if quick else (9, 3)
    with tempfile.TemporaryDirectory() as tmp:
        _prepare_pipeline_dataset(Path(tmp), quick)
        trainers, loaders = {}, {}
        for name in PIPELINE_TRAINERS:
            trainer = get_trainer_from_args("991", "3d_fullres", 0, name, device=torch.device("cpu"))
            trainer._set_batch_size_and_oversample()
            loaders[name], _ = trainer.get_dataloaders()  # nnUNet_n_proc_DA=0: in this process
            trainers[name] = trainer
        per_sample: dict[str, list[float]] = {name: [] for name in PIPELINE_TRAINERS}
        target_ms: list[float] = []
        for round_index in range(-1, rounds):  # round -1 warms caches up and is not counted
            for name in PIPELINE_TRAINERS:
                # paired design: the same seed per round, so every trainer loads and augments the same
                # samples the same way and only what differs between the pipelines is timed
                random.seed(round_index + 1)
                np.random.seed(round_index + 1)
                torch.manual_seed(round_index + 1)
                start = time.perf_counter()
                for _ in range(batches_per_round):
                    batch = next(loaders[name])
                elapsed = time.perf_counter() - start
                if round_index < 0:
                    continue
                per_sample[name].append(1000 * elapsed / (batches_per_round * trainers[name].batch_size))
            if round_index < 0:
                continue
            # on-device targets of the default SDM trainer, here on the CPU (all weighted scales)
            sdm = trainers["nnUNetTrainerSDM_Xue2020"]
            targets = batch["target"] if isinstance(batch["target"], list) else [batch["target"]]
            targets = [t[:, :1] for t in targets]
            start = time.perf_counter()
            for i, weight in enumerate(sdm.deep_supervision_weights):
                if weight:
                    sdm.make_scale_target(targets[i], targets[0].shape[2:])
            target_ms.append(1000 * (time.perf_counter() - start) / targets[0].shape[0])
        config = trainers["nnUNetTrainer"].configuration_manager
        mean = {name: statistics.mean(values) for name, values in per_sample.items()}
    # paired rounds (same seed, same samples): the median of the per-round ratios is robust to the
    # load spikes of a shared machine, which hit single rounds
    paired = {
        name: statistics.median(v / s for v, s in zip(values, per_sample["nnUNetTrainer"]))
        for name, values in per_sample.items()
    }
    ratio = paired["nnUNetTrainerSDM_Xue2020"]
    return {
        "patch_size": list(config.patch_size),
        "batch_size": trainers["nnUNetTrainer"].batch_size,
        "samples_per_trainer": rounds * batches_per_round * trainers["nnUNetTrainer"].batch_size,
        "ms_per_sample_by_round": {
            name: [round(v, 1) for v in values] for name, values in per_sample.items()
        },
        "ms_per_sample": {name: round(value, 1) for name, value in mean.items()},
        "ratio_of_means_over_stock": {
            name: round(value / mean["nnUNetTrainer"], 3) for name, value in mean.items()
        },
        "median_paired_ratio_over_stock": {name: round(value, 3) for name, value in paired.items()},
        "on_device_targets_ms_per_sample_on_this_cpu": round(statistics.mean(target_ms), 1),
        "acceptance": dict(
            ACCEPTANCE_PIPELINE,
            ratio=round(ratio, 3),
            met=ratio <= ACCEPTANCE_PIPELINE["max_ratio_default_sdm_over_stock"],
        ),
    }


SECTIONS: dict[str, Callable[[bool], dict]] = {
    "sdm_speed": section_sdm_speed,
    "data_pipeline": section_data_pipeline,
}


def environment() -> dict:
    import edt
    import scipy

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "edt": getattr(edt, "__version__", None) or _dist_version("edt"),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other jobs skew absolute times
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and only the smallest patch")
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args(argv)
    report = {"environment": environment(), "quick": args.quick}
    for name in args.sections:
        with contextlib.redirect_stdout(sys.stderr):  # nnU-Net prints; stdout is for the JSON only
            report[name] = SECTIONS[name](args.quick)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
