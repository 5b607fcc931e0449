"""Shared fixtures: nnU-Net environments on synthetic data."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: the two xdist workers' nnU-Net processes share 2 cores, and
# spinning threads took the CPU from the other worker (two 1-epoch nnUNetv2_train side by side: 28 s -> 22 s).
# Set before torch is imported (OpenMP reads it once); subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_sdm.workflow import (
    nnunet_command,
    nnunet_environment,
    plan_and_preprocess,
    predict_command,
    run_captured,
)

REPO = Path(__file__).resolve().parents[1]
#: the planned synthetic dataset's plans (nnU-Net's, made small for the CPU) and its unlabeled cases
PLANS = "nnUNetPlans_cpu_small"
UNLABELED_CASES = 3
SHARED_DATA = REPO.parent / "shared" / "data"


def nnunet_env(workdir: Path, **extra: str) -> dict[str, str]:
    """nnU-Net's environment for a work folder, with one data-augmentation worker."""
    env = nnunet_environment(workdir)
    env.update(nnUNet_compile="f", nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", OMP_NUM_THREADS="2", **extra)
    return env


#: an nnU-Net console script of this environment
nnunet_bin = nnunet_command
#: a command with its output kept; a failure raises CommandError quoting stdout and stderr
run = run_captured


def smoke_budget(
    epochs: int = 1, iterations: int = 3, val_iterations: int = 2, **extra: str
) -> dict[str, str]:
    """The environment variables that give our trainers a tiny budget under ``nnUNetv2_train``."""
    return {
        "nnUNetSDM_num_epochs": str(epochs),
        "nnUNetSDM_iterations_per_epoch": str(iterations),
        "nnUNetSDM_val_iterations_per_epoch": str(val_iterations),
        **extra,
    }


def two_class_labels(trainer) -> torch.Tensor:
    """(B, 1, *patch) label map of the trainer's patch size with one box of each class (1, 2)."""
    labels = torch.zeros(trainer.batch_size, 1, *trainer.configuration_manager.patch_size)
    labels[:, :, 2:-2, 8:20, 8:20] = 1
    labels[:, :, 4:6, 25:40, 30:32] = 2
    return labels


def synthetic_batch(trainer, labels: torch.Tensor | None = None, poison: bool = False) -> dict:
    """A batch as nnU-Net's loader gives it: a random image, the labels (default
    :func:`two_class_labels`) at every deep-supervision scale; ``poison`` puts one NaN into the image."""
    labels = two_class_labels(trainer) if labels is None else labels
    patch = labels.shape[2:]
    targets = [
        torch.nn.functional.interpolate(
            labels, [round(p * s) for p, s in zip(patch, scale)], mode="nearest-exact"
        )
        for scale in trainer._get_deep_supervision_scales()
    ]
    data = torch.randn(labels.shape[0], 1, *patch)
    if poison:
        data[0, 0, 3, 10, 10] = float("nan")  # one corrupt voxel
    return {"data": data, "target": targets, "keys": [f"case_{i}" for i in range(len(labels))]}


def nnunet_train(
    env: dict[str, str], trainer: str, *extra: str, fold: str = "0"
) -> subprocess.CompletedProcess:
    """``nnUNetv2_train 990 3d_fullres FOLD -tr TRAINER -device cpu EXTRA...`` on the synthetic dataset."""
    return run(
        [nnunet_bin("nnUNetv2_train"), "990", "3d_fullres", fold, "-tr", trainer, "-device", "cpu", *extra],
        env,
    )


def training_log(fold: Path) -> str:
    """The text of the training log written last in ``fold`` (a trainer built elsewhere with the same
    names, e.g. a test in-process, leaves a log of its own there)."""
    logs = list(fold.glob("training_log_*.txt"))
    assert logs, f"no training log in {fold}"
    return max(logs, key=lambda p: p.stat().st_mtime_ns).read_text()


def predict_and_check(
    env: dict[str, str], raw: Path, out: Path, trainer: str, plans: str = "nnUNetPlans", *extra: str
) -> None:
    """``nnUNetv2_predict`` the dataset's imagesTs (fold 0, CPU), then check every prediction: the image's
    size and spacing, and label values of the synthetic dataset only."""
    run(predict_command(raw / "imagesTs", out, "990", trainer, plans, extra=extra), env)
    images = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))
    assert images
    for image_file in images:
        image = sitk.ReadImage(str(image_file))
        prediction = sitk.ReadImage(str(out / image_file.name.replace("_0000.nii.gz", ".nii.gz")))
        assert prediction.GetSize() == image.GetSize(), image_file.name
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing()), image_file.name
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}, image_file.name


@pytest.fixture(scope="session")
def planned_synthetic(tmp_path_factory) -> dict:
    """A tiny synthetic dataset, planned and preprocessed by nnU-Net, with small CPU plans."""
    from nnunet_sdm.synth import make_synthetic_dataset

    workdir = tmp_path_factory.mktemp("nnunet")
    env = nnunet_env(workdir)
    info = make_synthetic_dataset(
        env["nnUNet_raw"],
        dataset_id=990,
        num_training=6,
        num_test=2,
        shape=(16, 48, 48),
        seed=1,
        num_unlabeled=UNLABELED_CASES,
    )
    preprocessed = plan_and_preprocess(
        990,
        env,
        workdir / "logs",
        override="cpu_small",
        num_processes=1,
        verify=False,
        announce=lambda _: None,
    )
    # the semi-supervised trainer's unlabeled cases, preprocessed with the small CPU plans
    run(
        [
            sys.executable,
            "-m",
            "nnunet_sdm.cli",
            "preprocess-unlabeled",
            "-d",
            "990",
            "-p",
            PLANS,
            "-np",
            "1",
        ],
        env,
    )
    return {
        "workdir": workdir,
        "env": env,
        "raw": Path(info["folder"]),
        "unlabeled_cases": info["unlabeled_cases"],
        "preprocessed": preprocessed,
        "dataset_id": "990",
        "results": Path(env["nnUNet_results"]) / Path(info["folder"]).name,
    }


#: the test files that take longest on 2 cores, longest first (measured with ``--durations``). pytest-xdist
#: hands whole files to its two workers in collection order (with ``--no-loadscope-reorder``, set in
#: pyproject.toml; its default order, most tests first, left one long end-to-end file running alone at the
#: end), so these start first and the many short files fill in at the end. A file missing here only runs
#: later; the other slow files follow these, then the fast ones.
LONGEST_FIRST = (
    "tests/e2e/test_dataset_kinds.py",
    "tests/benchmarks/test_accuracy_harness.py",
    "tests/inference/test_predict_sdm_end_to_end.py",
    "tests/e2e/test_distance_trainers.py",
    "tests/benchmarks/test_benchmark_scripts.py",
    "tests/e2e/test_configurations.py",
    "tests/e2e/test_xue_end_to_end.py",
    "tests/e2e/test_plans_overrides.py",
    "tests/e2e/test_li_end_to_end.py",
    "tests/e2e/test_semi_supervised.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        if path in rank:
            return rank[path]
        return len(rank) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=order)  # stable: each file keeps its own order
