"""Region-based datasets and the ignore label through nnU-Net's real commands.

``nnunet-sdm synth --regions`` (BraTS-like nested regions) and ``--ignore-label`` (every third slice
annotated), each planned by ``nnUNetv2_plan_and_preprocess`` with the ``cpu_small`` plans; then:

- the flagship: ``nnUNetv2_train`` (1 epoch), ``--c`` to a second epoch, ``nnUNetv2_predict`` (label values
  of the dataset only; regions come back as their ``regions_class_order`` labels) and ``nnunet-sdm evaluate``
  (regions scored as unions);
- every other trainer that supports the kind: ``nnUNetv2_train`` at the smallest budget and
  ``nnUNetv2_predict``;
- the trainers that do not: ``nnUNetv2_train`` stops at start-up with their message (tested in process in
  ``tests/robustness/test_trainer_start_up.py`` for every shim; here once through the command).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.sdm_format import read_sdm, sdm_path
from nnunet_sdm.workflow import CommandError, plan_and_preprocess, predict_command
from tests.conftest import nnunet_bin, nnunet_env, run, smoke_budget

pytestmark = pytest.mark.slow

PLANS = "nnUNetPlans_cpu_small"
KINDS = {"regions": (994, ["--regions"], {0, 1, 2, 3}), "ignore": (995, ["--ignore-label"], {0, 1, 2})}
SUPPORTING = [
    "nnUNetTrainerSDMDualHead",
    "nnUNetTrainerDistPenaltyCE",
    "nnUNetTrainerDistPenaltyDiceCE",
    "nnUNetTrainerBoundary",
    "nnUNetTrainerHD",
]


@pytest.fixture(scope="module", params=list(KINDS))
def planned(request, tmp_path_factory) -> dict:
    kind = request.param
    dataset_id, flags, values = KINDS[kind]
    workdir = tmp_path_factory.mktemp(f"kind_{kind}")
    env = nnunet_env(workdir, **smoke_budget(epochs=1, iterations=2, val_iterations=1))
    command = [nnunet_bin("nnunet-sdm"), "synth", env["nnUNet_raw"], *flags]
    run([*command, "--num-training", "5", "--num-test", "1", "--seed", "2"], env)
    raw = next(Path(env["nnUNet_raw"]).glob(f"Dataset{dataset_id}_*"))
    plan_and_preprocess(
        dataset_id, env, workdir / "logs", override="cpu_small", num_processes=1, announce=lambda _: None
    )
    return {"kind": kind, "id": str(dataset_id), "env": env, "raw": raw, "values": values, "workdir": workdir}


def train(planned: dict, trainer: str, *extra: str, env: dict | None = None):
    command = [nnunet_bin("nnUNetv2_train"), planned["id"], "3d_fullres", "0", "-tr", trainer, "-p", PLANS]
    return run([*command, "-device", "cpu", *extra], env or planned["env"])


def predict(planned: dict, trainer: str) -> Path:
    out = planned["workdir"] / f"pred_{trainer}"
    images = planned["raw"] / "imagesTs"
    run(predict_command(images, out, planned["id"], trainer, PLANS, tta=False), planned["env"])
    for image_file in sorted(images.glob("*_0000.nii.gz")):
        prediction = sitk.ReadImage(str(out / image_file.name.replace("_0000.nii.gz", ".nii.gz")))
        assert prediction.GetSize() == sitk.ReadImage(str(image_file)).GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= planned["values"], image_file.name
    return out


def test_flagship_trains_resumes_predicts_and_evaluates(planned):
    train(planned, "nnUNetTrainerSDM")
    env = {**planned["env"], "nnUNetSDM_num_epochs": "2"}
    train(planned, "nnUNetTrainerSDM", "--c", env=env)
    fold = next(Path(planned["env"]["nnUNet_results"]).glob("*/nnUNetTrainerSDM__*")) / "fold_0"
    log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    assert "Epoch 1" in log and "consistency" in log
    plans = json.loads((fold.parent / "plans.json").read_text())
    assert plans.get("nnunet_sdm", {}).get("region_based", False) == (planned["kind"] == "regions")
    out = predict(planned, "nnUNetTrainerSDM")
    summary_file = planned["workdir"] / "summary.json"
    command = [nnunet_bin("nnunet-sdm"), "evaluate", str(planned["raw"] / "labelsTs"), str(out)]
    run(
        [*command, "--dataset-json", str(planned["raw"] / "dataset.json"), "-o", str(summary_file)],
        planned["env"],
    )
    summary = json.loads(summary_file.read_text())
    expected = {"(1, 2, 3)", "(2, 3)", "3"} if planned["kind"] == "regions" else {"1", "2"}
    assert set(summary["mean"]) == expected
    assert summary["ignore_label"] == (3 if planned["kind"] == "ignore" else None)
    # our predictor writes one SDM per region (under its regions_class_order label) or per class
    with_sdm = planned["workdir"] / "pred_with_sdm"
    command = [
        nnunet_bin("nnunet-sdm"),
        "predict",
        "-i",
        str(planned["raw"] / "imagesTs"),
        "-o",
        str(with_sdm),
    ]
    command += ["-d", planned["id"], "-c", "3d_fullres", "-tr", "nnUNetTrainerSDM", "-p", PLANS, "-f", "0"]
    run([*command, "-device", "cpu", "--disable_tta", "--save-sdm"], planned["env"])
    info = json.loads((with_sdm / "sdm" / "sdm.json").read_text())
    assert info["classes"] == ([1, 2, 3] if planned["kind"] == "regions" else [1, 2])
    for case in sorted((planned["raw"] / "imagesTs").glob("*_0000.nii.gz")):
        name = case.name.replace("_0000.nii.gz", ".nii.gz")
        label_map = sitk.GetArrayFromImage(sitk.ReadImage(str(with_sdm / name)))
        assert set(np.unique(label_map)) <= planned["values"]
        for label in info["classes"]:
            sdm = read_sdm(sdm_path(with_sdm / name.replace(".nii.gz", ""), ".nii.gz"), label)[0]
            assert sdm.shape == label_map.shape and np.isfinite(sdm).all()


@pytest.mark.parametrize("trainer", SUPPORTING)
def test_every_supporting_trainer_trains_and_predicts(planned, trainer):
    train(planned, trainer)
    predict(planned, trainer)


def test_a_trainer_that_cannot_stops_at_start_up(planned):
    with pytest.raises(CommandError) as error:
        train(planned, "nnUNetTrainerSDM_Xue2020")
    said = "is region-based" if planned["kind"] == "regions" else "has an ignore label"
    assert said in str(error.value) and "Trainers that support it: nnUNetTrainer, " in str(error.value)
