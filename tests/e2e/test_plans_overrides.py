"""Bundled plans overrides on the synthetic dataset, and a FLARE submission run from a clean environment.

CPU budget: the published settings are too large for CI (flare21: patch 80 x 192 x 160, 32-320
features; xue2020_deep_unet: 24-384 features). So:

- every bundled override is applied with the real ``nnunet-sdm plans apply`` to the synthetic dataset
  and trained for two steps in-process: cpu_small and xue2020_deep_unet as they are (Xue's full-width
  network, with as many stages as the 16 x 48 x 48 patch allows), flare21 composed with a CPU override
  (``--source-plans``) that clips the patch to the dataset, re-plans the strides for it and scales the
  features down (its batch size 2 stays);
- Xue's network scaled down (4-16 features, GroupNorm with 4 groups, again by composing overrides) is
  trained through ``nnUNetv2_train -p`` with ``nnUNetTrainerSDM_Xue2020Adam``, packaged with
  ``nnunet-sdm flare package`` and run with its ``predict.sh`` and ``nnunet-sdm flare run`` from another
  directory with an environment holding only PATH (the venv's bin first).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.conftest import nnunet_bin, nnunet_train, run, smoke_budget, synthetic_batch, training_log

pytestmark = pytest.mark.slow

BUDGET = smoke_budget(epochs=1, iterations=2, val_iterations=1)
CPU_XUE = {"features_per_stage": {"base": 4, "max": 16}, "norm": {"type": "group", "num_groups": 4}}
CPU_FLARE = {"patch_size": [16, 48, 48], "n_stages": "auto", "features_per_stage": {"base": 4, "max": 16}}


def apply(env: dict, override: str, name: str, source: str = "nnUNetPlans") -> dict:
    run(
        [
            nnunet_bin("nnunet-sdm"),
            "plans",
            "apply",
            "990",
            override,
            "--name",
            name,
            "--source-plans",
            source,
        ],
        env,
    )
    return json.loads((Path(env["nnUNet_preprocessed"]) / "Dataset990_SDMSynth" / f"{name}.json").read_text())


def write_override(folder: Path, name: str, settings: dict) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"description": f"CPU test variant: {name}", "configuration": settings}))
    return str(path)


@pytest.mark.parametrize(
    ("override", "trainer_name"),
    [
        ("cpu_small", "nnUNetTrainerSDM_Xue2020"),
        ("xue2020_deep_unet", "nnUNetTrainerSDM_Xue2020Adam"),
        ("flare21", "nnUNetTrainerSDM_Xue2020"),
    ],
)
def test_bundled_overrides_train(planned_synthetic, tmp_path, monkeypatch, override, trainer_name):
    from nnunetv2.run.run_training import get_trainer_from_args

    env = planned_synthetic["env"]
    plans_name = f"nnUNetPlans_e2e_{override}"
    config = apply(env, override, plans_name)["configurations"]["3d_fullres"]
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres"  # the preprocessed data serve all three
    if override == "cpu_small":
        assert config["batch_size"] == 2
    elif override == "xue2020_deep_unet":
        assert config["architecture"]["network_class_name"] == "nnunet_sdm.network.xue_unet.XueUNet"
        # 16 x 48 x 48: 4 of Xue's 6 down-samplings fit (bottleneck 2 x 3 x 3)
        assert config["architecture"]["arch_kwargs"]["features_per_stage"] == [24, 48, 96, 192, 384]
    else:
        assert config["patch_size"] == [80, 192, 160] and config["batch_size"] == 2
        assert config["architecture"]["arch_kwargs"]["n_stages"] == 6
        cpu = write_override(tmp_path, "flare_cpu", CPU_FLARE)
        plans_name = f"{plans_name}_cpu"
        config = apply(env, cpu, plans_name, source="nnUNetPlans_e2e_flare21")["configurations"]["3d_fullres"]
        assert config["batch_size"] == 2 and config["architecture"]["arch_kwargs"]["n_stages"] == 4

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trainer = get_trainer_from_args(
        "990", "3d_fullres", 0, trainer_name, plans_name, device=torch.device("cpu")
    )
    trainer.initialize()
    trainer.on_train_epoch_start()  # nnU-Net's lr_scheduler.step(current_epoch)
    if trainer_name == "nnUNetTrainerSDM_Xue2020Adam":
        assert isinstance(trainer.optimizer, torch.optim.Adam)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    for _ in range(2):
        out = trainer.train_step(synthetic_batch(trainer))
        assert np.isfinite(out["loss"])


@pytest.fixture(scope="module")
def trained_xue(planned_synthetic, tmp_path_factory):
    env = {**planned_synthetic["env"], **BUDGET}
    folder = tmp_path_factory.mktemp("overrides")
    apply(env, "xue2020_deep_unet", "nnUNetPlans_xue_full")
    apply(
        env, write_override(folder, "xue_cpu", CPU_XUE), "nnUNetPlans_xue_cpu", source="nnUNetPlans_xue_full"
    )
    nnunet_train(env, "nnUNetTrainerSDM_Xue2020Adam", "-p", "nnUNetPlans_xue_cpu")
    model = planned_synthetic["results"] / "nnUNetTrainerSDM_Xue2020Adam__nnUNetPlans_xue_cpu__3d_fullres"
    return {**planned_synthetic, "env": env, "model": model}


def test_xue_network_trains_with_xue_adam_through_nnunetv2_train(trained_xue):
    fold = trained_xue["model"] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    log = training_log(fold)
    assert "Current learning rate: 0.0005" in log
    plans = json.loads((trained_xue["model"] / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("XueUNet") and arch["arch_kwargs"]["upsampling"] == "linear"


def test_flare_package_runs_from_a_clean_environment(trained_xue, tmp_path):
    submission = tmp_path / "submission"
    run(
        [
            nnunet_bin("nnunet-sdm"),
            "flare",
            "package",
            "-d",
            "990",
            "-c",
            "3d_fullres",
            "-tr",
            "nnUNetTrainerSDM_Xue2020Adam",
            "-p",
            "nnUNetPlans_xue_cpu",
            "-f",
            "0",
            "-o",
            str(submission),
        ],
        trained_xue["env"],
    )
    checkpoints = sorted(p.name for p in submission.rglob("*.pth"))
    assert checkpoints == ["checkpoint_final.pth"]

    images = trained_xue["raw"] / "imagesTs"
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert len(cases) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}  # no nnUNet_* variables, no HOME

    out = tmp_path / "pred"
    run(["sh", str(submission / "predict.sh"), str(images), str(out)], clean, cwd=elsewhere)
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.nii.gz" for c in cases]  # FLARE naming only
    for case in cases:
        image = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
        prediction = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert prediction.GetSize() == image.GetSize()
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}

    timed = tmp_path / "timed"
    run(
        [
            nnunet_bin("nnunet-sdm"),
            "flare",
            "run",
            str(submission),
            str(images),
            str(timed),
            "--gt",
            str(trained_xue["raw"] / "labelsTs"),
        ],
        {**clean, "TTA": "0"},
        cwd=elsewhere,
    )
    with open(timed / "flare_run.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == cases
    for row in rows:
        assert float(row["seconds"]) > 0 and float(row["peak_rss_mb"]) > 50
        assert row["peak_gpu_mb"] == ""
        for key in ("DSC_organ", "NSD_organ", "DSC_vessel", "NSD_vessel"):
            assert 0.0 <= float(row[key]) <= 1.0
    assert sorted(p.name for p in timed.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]


def test_spacing_override_is_preprocessed_and_trained_under_its_own_identifier(
    planned_synthetic, tmp_path, monkeypatch
):
    """A preprocessing change: nnUNetv2_preprocess -plans_name, then the trainer reads that data."""
    from nnunetv2.run.run_training import get_trainer_from_args

    env = planned_synthetic["env"]
    coarse = {"spacing": [2.5, 1.6, 1.6], "patch_size": [16, 32, 32], "n_stages": "auto"}
    coarse["features_per_stage"] = {"base": 4, "max": 16}
    config = apply(env, write_override(tmp_path, "coarse", coarse), "nnUNetPlans_e2e_coarse")
    config = config["configurations"]["3d_fullres"]
    assert config["data_identifier"] == "nnUNetPlans_e2e_coarse_3d_fullres"
    run(
        [
            nnunet_bin("nnUNetv2_preprocess"),
            "-d",
            "990",
            "-c",
            "3d_fullres",
            "-plans_name",
            "nnUNetPlans_e2e_coarse",
            "-np",
            "1",
        ],
        env,
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trainer = get_trainer_from_args(
        "990",
        "3d_fullres",
        0,
        "nnUNetTrainerSDM_Xue2020",
        "nnUNetPlans_e2e_coarse",
        device=torch.device("cpu"),
    )
    trainer.initialize()
    assert trainer.preprocessed_dataset_folder.endswith("nnUNetPlans_e2e_coarse_3d_fullres")
    dataset_tr, _ = trainer.get_tr_and_val_datasets()
    data, seg, *_ = dataset_tr.load_case(dataset_tr.identifiers[0])
    assert tuple(data.shape[1:]) == (16, 24, 24)  # 48 x 48 at 0.8 mm resampled to 1.6 mm
    out = trainer.train_step(synthetic_batch(trainer))
    assert np.isfinite(out["loss"])
