"""The flagship on every kind of nnU-Net configuration, through nnU-Net's real commands at a tiny budget:
``nnUNetResEncUNetMPlans`` (the ResEnc M planner's ResidualEncoderUNet), ``2d``, and ``3d_lowres`` followed by
``3d_cascade_fullres`` (trained on the low-resolution stage's exported predictions, predicted with
``-prev_stage_predictions``).

The synthetic dataset (4 training cases of 32 x 96 x 96 at 2.5 x 0.8 x 0.8 mm) is planned with nnU-Net's
``-gpu_memory_target 0.15`` (GB), which makes the 3d_fullres patch small enough (16 x 48 x 48) for nnU-Net to
plan a 3d_lowres stage and the cascade; the ResEnc M planner keeps its own memory target, so its patch is the
whole image (one sliding window per case: its validation and prediction are most of this file's time
otherwise). ``cpu_small`` (8-64 features, batch 2) is then applied to every configuration. The predictions
here run without test-time mirroring (mirroring is tested with the default plans elsewhere). Every training uses fold ``all`` (4 cases are too few for nnU-Net's 5 folds), so the
low-resolution stage's final validation exports its predictions of all training cases for the cascade.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.plans import apply_override, bundled_override, write_plans
from nnunet_sdm.synth import make_synthetic_dataset
from nnunet_sdm.workflow import predict_command
from tests.conftest import nnunet_bin, nnunet_env, run, smoke_budget

pytestmark = pytest.mark.slow

TRAINER = "nnUNetTrainerSDM"
DATASET = "993"
BUDGET = smoke_budget(epochs=1, iterations=2, val_iterations=1)
PLANS = "nnUNetPlans_cpu_small"
RESENC = "nnUNetResEncUNetMPlans_cpu_small"


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("configurations")
    env = nnunet_env(workdir, **BUDGET)
    info = make_synthetic_dataset(
        env["nnUNet_raw"],
        dataset_id=993,
        name="SDMConfigs",
        num_training=4,
        num_test=1,
        shape=(32, 96, 96),
        seed=3,
    )
    plan = [nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", DATASET, "-gpu_memory_target", "0.15"]
    run([*plan, "-c", "2d", "3d_fullres", "3d_lowres", "-np", "1"], env)
    resenc = [nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", DATASET, "-pl", "nnUNetPlannerResEncM"]
    run([*resenc, "--no_pp"], env)  # shares nnUNetPlans_3d_fullres's data (same spacing)
    preprocessed = Path(env["nnUNet_preprocessed"]) / info["dataset_name"]
    small = json.loads(bundled_override("cpu_small").read_text())
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    for configuration in ("3d_fullres", "2d", "3d_lowres"):  # the cascade inherits 3d_fullres's
        plans = apply_override(plans, small, configuration, PLANS)
    (preprocessed / f"{PLANS}.json").write_text(json.dumps(plans, indent=1))
    write_plans(
        preprocessed,
        bundled_override("cpu_small"),
        RESENC,
        "3d_fullres",
        source_plans="nnUNetResEncUNetMPlans",
    )
    return {"env": env, "raw": Path(info["folder"]), "workdir": workdir}


def train(planned: dict, configuration: str, plans: str) -> None:
    command = [nnunet_bin("nnUNetv2_train"), DATASET, configuration, "all", "-tr", TRAINER, "-p", plans]
    run([*command, "-device", "cpu"], planned["env"])


def predict(planned: dict, configuration: str, plans: str, out: Path, *extra: str) -> Path:
    images = planned["raw"] / "imagesTs"
    command = predict_command(
        images,
        out,
        DATASET,
        TRAINER,
        plans,
        folds=("all",),
        configuration=configuration,
        tta=False,
        extra=extra,
    )
    run(command, planned["env"])
    for image_file in sorted(images.glob("*_0000.nii.gz")):
        image = sitk.ReadImage(str(image_file))
        prediction = sitk.ReadImage(str(out / image_file.name.replace("_0000.nii.gz", ".nii.gz")))
        assert prediction.GetSize() == image.GetSize(), image_file.name
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}, image_file.name
    return out


def model_folder(planned: dict, configuration: str, plans: str) -> Path:
    return (
        Path(planned["env"]["nnUNet_results"])
        / "Dataset993_SDMConfigs"
        / f"{TRAINER}__{plans}__{configuration}"
    )


def test_residual_encoder_m_plans(planned):
    train(planned, "3d_fullres", RESENC)
    log = next(
        (model_folder(planned, "3d_fullres", RESENC) / "fold_all").glob("training_log_*.txt")
    ).read_text()
    assert "consistency" in log  # the flagship's terms, on the ResidualEncoderUNet
    predict(planned, "3d_fullres", RESENC, planned["workdir"] / "pred_resenc")


def test_2d(planned):
    train(planned, "2d", PLANS)
    predict(planned, "2d", PLANS, planned["workdir"] / "pred_2d")


def test_3d_lowres_then_cascade(planned):
    train(planned, "3d_lowres", PLANS)
    exported = model_folder(planned, "3d_lowres", PLANS) / "predicted_next_stage" / "3d_cascade_fullres"
    assert len(list(exported.glob("*"))) >= 4  # every training case, for the cascade's inputs
    train(planned, "3d_cascade_fullres", PLANS)
    lowres = predict(planned, "3d_lowres", PLANS, planned["workdir"] / "pred_lowres")
    predict(
        planned,
        "3d_cascade_fullres",
        PLANS,
        planned["workdir"] / "pred_cascade",
        "-prev_stage_predictions",
        str(lowres),
    )
