"""Shared fixtures: nnU-Net environments on synthetic data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.workflow import (
    nnunet_command,
    nnunet_environment,
    plan_and_preprocess,
    predict_command,
    run_captured,
)

REPO = Path(__file__).resolve().parents[1]
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
        env["nnUNet_raw"], dataset_id=990, num_training=6, num_test=2, shape=(16, 48, 48), seed=1
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
    return {
        "workdir": workdir,
        "env": env,
        "raw": Path(info["folder"]),
        "preprocessed": preprocessed,
        "dataset_id": "990",
        "results": Path(env["nnUNet_results"]) / Path(info["folder"]).name,
    }
