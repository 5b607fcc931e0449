"""`nnunet-sdm predict --save-sdm` on a tiny nnUNetTrainerSDM_Xue2020 model trained with the real nnUNetv2_train.

Checks: the label maps are nnUNetv2_predict's, bit for bit; nnU-Net's sequential path stops with a clear error;
the SDM images have each image's geometry, also for inputs that nnU-Net resamples (other spacing),
crops (zero border) and that have a rotated direction and an offset origin; and the sign of the SDM
agrees with the label map as guaranteed (see :mod:`nnunet_sdm.inference.predict`): SDM-only networks
label a voxel c exactly where sdm_c is the smallest SDM and negative, so voxels labelled c
have sdm_c < 0 and <= every other class's SDM, and background voxels have every SDM >= 0 -- exactly,
the label map is the Heaviside of the written SDMs; outside nnU-Net's crop the SDM is +1.

A model trained for a few iterations may predict no foreground at all, which would leave the sign
checks with nothing to check. So after training, the bias of the class-1 SDM output is shifted to put
the median of that output on one case at 0 (about half of it inside class 1, whatever the training
reached); every command then runs on that checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.conftest import nnunet_bin, nnunet_train, run, smoke_budget

pytestmark = pytest.mark.slow

PLANS = "nnUNetPlans_cpu_small"
BUDGET = smoke_budget(epochs=2, iterations=8)


@pytest.fixture(scope="module")
def trained(planned_synthetic, tmp_path_factory):
    env = {**planned_synthetic["env"], **BUDGET}
    nnunet_train(env, "nnUNetTrainerSDM_Xue2020", "-p", PLANS)
    model = (
        Path(env["nnUNet_results"])
        / planned_synthetic["raw"].name
        / f"nnUNetTrainerSDM_Xue2020__{PLANS}__3d_fullres"
    )
    images = sorted((planned_synthetic["raw"] / "imagesTs").glob("*_0000.nii.gz"))
    _centre_class_1(model, images[0], env)
    inputs = tmp_path_factory.mktemp("inputs")
    for image_file in sorted((planned_synthetic["raw"] / "imagesTs").glob("*_0000.nii.gz")):
        image = sitk.ReadImage(str(image_file))
        sitk.WriteImage(image, str(inputs / image_file.name))
        sitk.WriteImage(_other_geometry(image), str(inputs / image_file.name.replace("SDMSynth", "Moved")))
    return {**planned_synthetic, "env": env, "inputs": inputs}


def _centre_class_1(model, image_file, env):
    """Shift the class-1 SDM bias of the final 1x1 convolution so its median raw output on a case is 0."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunet_sdm.inference import SDMPredictor

    old = dict(os.environ)
    os.environ.update(env)
    try:
        predictor = SDMPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
    finally:
        os.environ.clear()
        os.environ.update(old)
    image, properties = SimpleITKIO().read_images([str(image_file)])
    data, _, _ = predictor.configuration_manager.preprocessor_class(verbose=False).run_case_npy(
        image,
        None,
        properties,
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.dataset_json,
    )
    data = pad_nd_image(data, predictor.configuration_manager.patch_size, "constant", {"value": 0})
    network = predictor.network.eval()
    channel = network.num_seg_channels  # the first SDM channel: class 1
    with torch.no_grad():
        raw = network._backbone(torch.from_numpy(np.ascontiguousarray(data))[None].float())
    shift = -float(torch.median(raw[0, channel]))
    checkpoint_file = model / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    last = max(
        int(k.split(".")[2]) for k in checkpoint["network_weights"] if k.startswith("decoder.seg_layers.")
    )
    checkpoint["network_weights"][f"decoder.seg_layers.{last}.bias"][channel] += shift
    torch.save(checkpoint, checkpoint_file)


def _other_geometry(image: sitk.Image) -> sitk.Image:
    """The image at another spacing, with a zero border (cropped by nnU-Net), rotated and moved."""
    spacing = (1.1, 0.9, 2.0)
    size = [round(n * s / t) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    resampled = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )
    array = np.pad(sitk.GetArrayFromImage(resampled), ((0, 0), (0, 0), (4, 0)))
    moved = sitk.GetImageFromArray(array)
    moved.SetSpacing(spacing)
    moved.SetOrigin((-12.5, 30.0, 7.25))
    moved.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return moved


def _predict(trained, out, *extra, command="nnunet-sdm", npp="1"):
    return run(_predict_args(trained, out, *extra, command=command, npp=npp), trained["env"])


def _predict_args(trained, out, *extra, command="nnunet-sdm", npp="1", trainer="nnUNetTrainerSDM_Xue2020"):
    args = [nnunet_bin(command)] + (["predict"] if command == "nnunet-sdm" else [])
    args += [
        "-i",
        str(trained["inputs"]),
        "-o",
        str(out),
        "-d",
        "990",
        "-c",
        "3d_fullres",
        "-tr",
        trainer,
        "-p",
        PLANS,
        "-f",
        "0",
        "-device",
        "cpu",
        "-npp",
        npp,
        "-nps",
        npp,
        *extra,
    ]
    return args


@pytest.fixture(scope="module")
def predictions(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("predictions")
    _predict(trained, root / "sdm", "--save-sdm")
    _predict(trained, root / "stock", command="nnUNetv2_predict")
    return {**trained, "root": root}


def _cases(trained):
    return sorted(f.name[: -len("_0000.nii.gz")] for f in trained["inputs"].glob("*_0000.nii.gz"))


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_label_maps_are_nnunet_predicts(predictions):
    root = predictions["root"]
    for case in _cases(predictions):
        labels = _array(root / "stock" / f"{case}.nii.gz")
        assert np.array_equal(_array(root / "sdm" / f"{case}.nii.gz"), labels), case
    # the SDM images are out of the way of tools that read every *.nii.gz of the folder
    assert sorted(p.name for p in (root / "sdm").glob("*.nii.gz")) == [
        f"{c}.nii.gz" for c in _cases(predictions)
    ]


def test_sdm_images_have_the_image_geometry(predictions):
    root = predictions["root"]
    info = json.loads((root / "sdm" / "sdm" / "sdm.json").read_text())
    assert (
        info["classes"] == [1, 2]
        and "not mm" in info["unit"]
        and info["trainer"] == "nnUNetTrainerSDM_Xue2020"
    )
    for case in _cases(predictions):
        image = sitk.ReadImage(str(predictions["inputs"] / f"{case}_0000.nii.gz"))
        sdm = sitk.ReadImage(str(root / "sdm" / "sdm" / f"{case}_sdm.nii.gz"))
        assert sdm.GetDimension() == 4 and sdm.GetSize() == (*image.GetSize(), 2), case
        assert np.allclose(sdm.GetSpacing()[:3], image.GetSpacing()), case
        assert np.allclose(sdm.GetOrigin()[:3], image.GetOrigin()), case
        direction = np.array(sdm.GetDirection()).reshape(4, 4)[:3, :3]
        assert np.allclose(direction, np.array(image.GetDirection()).reshape(3, 3)), case
        values = sitk.GetArrayFromImage(sdm)
        assert values.dtype == np.float32 and np.all(np.abs(values) <= 1)


def test_sdm_sign_agrees_with_the_label_map(predictions):
    root = predictions["root"]
    foreground = 0
    for case in _cases(predictions):
        labels = _array(root / "sdm" / f"{case}.nii.gz")
        sdm = _array(root / "sdm" / "sdm" / f"{case}_sdm.nii.gz")  # (class, z, y, x)
        for c in (1, 2):
            inside = labels == c
            foreground += int(inside.sum())
            assert np.all(sdm[c - 1][inside] < 0), (case, c)
            assert np.all(sdm[c - 1][inside] <= sdm[2 - c][inside]), (case, c)
        assert np.all(sdm[:, labels == 0] >= 0), case
        # exactly: the label map is the Heaviside of the SDMs, argmax of [0, -sdm_1, -sdm_2]
        heaviside = np.argmax(np.concatenate([np.zeros_like(sdm[:1]), -sdm]), axis=0)
        assert np.array_equal(heaviside, labels), case
        if case.startswith("Moved"):  # nnU-Net's crop removed the zero border: background, SDM +1
            assert np.all(labels[..., :4] == 0) and np.all(sdm[..., :4] == 1)
    assert foreground > 1000  # the checks above were not vacuous (see the module docstring)


def test_continue_prediction_redoes_cases_without_sdm(predictions, tmp_path):
    out = tmp_path / "continued"
    out.mkdir()
    case = _cases(predictions)[0]
    for name in [f"{c}.nii.gz" for c in _cases(predictions)]:
        (out / name).write_bytes((predictions["root"] / "sdm" / name).read_bytes())
    result = _predict(predictions, out, "--save-sdm", "--continue_prediction")
    assert "4 cases without label map or SDM image" in result.stdout
    assert (out / "sdm" / f"{case}_sdm.nii.gz").is_file()
    (out / "sdm" / f"{case}_sdm.nii.gz").unlink()
    result = _predict(predictions, out, "--save-sdm", "--continue_prediction")
    assert "1 cases without label map or SDM image" in result.stdout
    assert (out / "sdm" / f"{case}_sdm.nii.gz").is_file()


def _untrained_model(env: dict[str, str], trainer_name: str) -> None:
    """An initialised, untrained model folder of ``trainer_name`` (enough for the predictor)."""
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.run.run_training import get_trainer_from_args

    old = dict(os.environ)
    os.environ.update(env)
    try:
        trainer = get_trainer_from_args(
            "990", "3d_fullres", 0, trainer_name, PLANS, device=torch.device("cpu")
        )
        trainer.initialize()
        os.makedirs(trainer.output_folder, exist_ok=True)
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
        save_json(
            trainer.plans_manager.plans,
            os.path.join(trainer.output_folder_base, "plans.json"),
            sort_keys=False,
        )
        save_json(
            trainer.dataset_json, os.path.join(trainer.output_folder_base, "dataset.json"), sort_keys=False
        )
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_save_sdm_with_a_stock_trainer_stops_naming_it(predictions, tmp_path):
    """A stock nnUNetTrainer model (initialised, not trained: enough for the predictor) has no SDM to write."""
    _untrained_model(predictions["env"], "nnUNetTrainer")
    command = _predict_args(predictions, tmp_path / "out", "--save-sdm", trainer="nnUNetTrainer")
    result = subprocess.run(command, env=predictions["env"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "trainer nnUNetTrainer has no SDM head" in result.stderr
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_save_sdm_in_nnunets_sequential_path_is_a_clear_error(trained, tmp_path):
    import subprocess

    args = _predict_args(trained, tmp_path / "seq", "--save-sdm", npp="0")
    result = subprocess.run(args, env=trained["env"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "--save-sdm needs nnU-Net's background export" in result.stderr + result.stdout


def test_sdm_guided_depth_filters_nnunets_prediction_and_keeps_it(predictions, tmp_path):
    """``--sdm-guided-depth``: nnU-Net's label maps and SDMs in <o>/unfiltered, the filtered ones in <o>, equal
    to ``nnunet-sdm sdm-guided`` on the unfiltered folder; a model without truncated SDMs stops naming it."""
    from nnunet_sdm.inference.sdm_guided import apply_to_folder

    _untrained_model(predictions["env"], "nnUNetTrainerSDM")
    out = tmp_path / "out"
    command = _predict_args(predictions, out, "--sdm-guided-depth", "0.5", trainer="nnUNetTrainerSDM")
    run(command, predictions["env"])
    cases = _cases(predictions)
    unfiltered = out / "unfiltered"
    for case in cases:
        assert (unfiltered / f"{case}.nii.gz").is_file() and (
            unfiltered / "sdm" / f"{case}_sdm.nii.gz"
        ).is_file()
    assert json.loads((out / "sdm_guided.json").read_text())["depth_mm"] == 0.5
    assert (out / "plans.json").is_file() and (out / "dataset.json").is_file()  # nnU-Net's pp can read <o>
    apply_to_folder(unfiltered, tmp_path / "again", 0.5)
    for case in cases:
        assert np.array_equal(_array(out / f"{case}.nii.gz"), _array(tmp_path / "again" / f"{case}.nii.gz"))

    # the same through a FLARE package's predict.sh, from a clean environment
    submission = tmp_path / "submission"
    package = [
        nnunet_bin("nnunet-sdm"),
        "flare",
        "package",
        "-d",
        "990",
        "-tr",
        "nnUNetTrainerSDM",
        "-p",
        PLANS,
    ]
    run([*package, "-f", "0", "-o", str(submission), "--sdm-guided-depth", "0.5"], predictions["env"])
    clean = {"PATH": f"{Path(nnunet_bin('nnunet-sdm')).parent}:/usr/bin:/bin", "DEVICE": "cpu"}
    flare_out = tmp_path / "flare"
    run(["sh", str(submission / "predict.sh"), str(predictions["inputs"]), str(flare_out)], clean)
    assert sorted(p.name for p in flare_out.iterdir()) == [f"{c}.nii.gz" for c in cases]
    for case in cases:
        assert np.array_equal(_array(out / f"{case}.nii.gz"), _array(flare_out / f"{case}.nii.gz"))

    xue = _predict_args(predictions, tmp_path / "xue", "--sdm-guided-depth", "1")
    result = subprocess.run(xue, env=predictions["env"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "trainer nnUNetTrainerSDM_Xue2020 predicts no truncated SDM" in result.stderr
    negative = _predict_args(
        predictions, tmp_path / "neg", "--sdm-guided-depth", "-1", trainer="nnUNetTrainerSDM"
    )
    result = subprocess.run(negative, env=predictions["env"], capture_output=True, text=True)
    assert result.returncode == 2 and "--sdm-guided-depth must be" in result.stderr, result.stderr[-2000:]
