"""Shared fixtures: nnU-Net environments on synthetic data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def nnunet_env(workdir: Path, **extra: str) -> dict[str, str]:
    """nnU-Net's environment for a work folder (the demo's), with one data-augmentation worker."""
    from nnunet_sdm.demo import nnunet_environment

    env = nnunet_environment(workdir)
    env.update(nnUNet_compile="f", nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", OMP_NUM_THREADS="2", **extra)
    return env


def nnunet_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(command: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode})\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def nnunet_train(
    env: dict[str, str], trainer: str, *extra: str, fold: str = "0"
) -> subprocess.CompletedProcess:
    """``nnUNetv2_train 990 3d_fullres FOLD -tr TRAINER -device cpu EXTRA...`` on the synthetic dataset."""
    return run(
        [nnunet_bin("nnUNetv2_train"), "990", "3d_fullres", fold, "-tr", trainer, "-device", "cpu", *extra],
        env,
    )


def predict_and_check(
    env: dict[str, str], raw: Path, out: Path, trainer: str, plans: str = "nnUNetPlans", *extra: str
) -> None:
    """``nnUNetv2_predict`` the dataset's imagesTs (fold 0, CPU), then check every prediction: the image's
    size and spacing, and label values of the synthetic dataset only."""
    run(
        [
            nnunet_bin("nnUNetv2_predict"),
            *("-i", str(raw / "imagesTs"), "-o", str(out), "-d", "990", "-c", "3d_fullres"),
            *("-tr", trainer, "-p", plans, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"),
            *extra,
        ],
        env,
    )
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
    from nnunet_sdm.plans import bundled_override, write_plans
    from nnunet_sdm.synth import make_synthetic_dataset

    workdir = tmp_path_factory.mktemp("nnunet")
    env = nnunet_env(workdir)
    info = make_synthetic_dataset(
        env["nnUNet_raw"], dataset_id=990, num_training=6, num_test=2, shape=(16, 48, 48), seed=1
    )
    run([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "990", "-c", "3d_fullres", "-np", "1"], env)
    preprocessed = Path(env["nnUNet_preprocessed"]) / Path(info["folder"]).name
    write_plans(preprocessed, bundled_override("cpu_small"), "nnUNetPlans_cpu_small")
    return {
        "workdir": workdir,
        "env": env,
        "raw": Path(info["folder"]),
        "preprocessed": preprocessed,
        "dataset_id": "990",
        "results": Path(env["nnUNet_results"]) / Path(info["folder"]).name,
    }
