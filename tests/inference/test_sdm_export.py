"""SDM export pieces without a trained model: network wrapper, resampling to the image, checks, writing."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from torch import nn

from nnunet_sdm import trainers_path
from nnunet_sdm.inference import SDMExportError, SDMPredictor, export_sdm, resample_sdm_to_original
from nnunet_sdm.inference.predict import SDM_ACCUMULATION_SCALE, _LogitsAndSDM, _WiderLabelManager
from nnunet_sdm.network import SDMHeadNetwork

LABELS = {"background": 0, "organ": 1, "vessel": 2}


def _sdm_network(num_seg: int, num_sdm: int) -> SDMHeadNetwork:
    torch.manual_seed(0)
    return SDMHeadNetwork(nn.Conv3d(1, num_seg + num_sdm, 3, padding=1), num_seg, num_sdm).eval()


@pytest.mark.parametrize("num_seg", [0, 3])
def test_wrapper_returns_the_usual_logits_then_the_sdm(num_seg):
    network = _sdm_network(num_seg, 2)
    x = torch.randn(1, 1, 6, 8, 8)
    with torch.no_grad():
        combined = _LogitsAndSDM(network)(x)
        logits = network(x)  # what nnU-Net's predictor sees without --save-sdm
    assert network.return_sdm is False  # switched back
    assert combined.shape[1] == 3 + 2
    assert torch.equal(combined[:, :3], logits)
    with torch.no_grad():
        network.return_sdm = True
        assert torch.equal(combined[:, 3:], SDM_ACCUMULATION_SCALE * network(x).sdm)
        network.return_sdm = False
    if num_seg == 0:  # SDM-only: logits are [0, -64 sdm], the SDM channels exactly their negation
        assert torch.equal(combined[:, 1:3], -combined[:, 3:])


def test_wider_label_manager_only_widens_the_head_count():
    manager = LabelManager(LABELS, None)
    wider = _WiderLabelManager(manager, 2)
    assert wider.num_segmentation_heads == 5 and manager.num_segmentation_heads == 3
    assert wider.foreground_labels == manager.foreground_labels


def _fakes(transpose=(0, 2, 1)):
    """Configuration (spacing 2.5 x 0.8 x 0.8 after transposition) and plans managers, and case properties."""
    transpose = list(transpose)
    backward = [transpose.index(i) for i in range(3)]
    configuration = SimpleNamespace(
        spacing=[2.5, 0.8, 0.8],
        resampling_fn_probabilities=partial(
            resample_data_or_seg_to_shape, is_seg=False, order=1, order_z=0, force_separate_z=None
        ),
    )
    plans = SimpleNamespace(
        transpose_forward=transpose,
        transpose_backward=backward,
        image_reader_writer_class=SimpleITKIO,
        get_label_manager=lambda dataset_json: LabelManager(dataset_json["labels"], None),
    )
    original_shape = (12, 30, 26)  # original numpy axis order
    original_spacing = [2.0, 1.1, 0.9]
    shape_t = [original_shape[i] for i in transpose]
    bbox_t = [[1, shape_t[0] - 1], [0, shape_t[1]], [3, shape_t[2] - 2]]  # nnU-Net's nonzero crop
    properties = {
        "spacing": original_spacing,
        "shape_before_cropping": shape_t,
        "bbox_used_for_cropping": bbox_t,
        "shape_after_cropping_and_before_resampling": [b - a for a, b in bbox_t],
        "sitk_stuff": {
            "spacing": (0.9, 1.1, 2.0),
            "origin": (5.0, -3.0, 12.5),
            "direction": (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
        },
    }
    return configuration, plans, properties, original_shape


def _preprocessed_sdm(properties, configuration, seed=0):
    """A smooth random SDM for 2 classes on the grid nnU-Net predicts on, float16 like the predictor."""
    from scipy import ndimage

    spacing_t = properties["spacing"]
    cropped = properties["shape_after_cropping_and_before_resampling"]
    shape = [round(n * s / t) for n, s, t in zip(cropped, spacing_t, configuration.spacing)]
    rng = np.random.default_rng(seed)
    sdm = ndimage.gaussian_filter(rng.normal(size=(2, *shape)), (0, 2, 3, 3))
    sdm = np.tanh(sdm / np.abs(sdm).max() * 2) - 0.05
    return sdm.astype(np.float16)


def _accumulated(sdm):
    """What the predictor's buffer holds for an SDM-only network: logits [0, -64 sdm] and SDM channels 64 sdm."""
    scaled = (SDM_ACCUMULATION_SCALE * sdm.astype(np.float32)).astype(np.float16)
    return np.concatenate([np.zeros_like(scaled[:1]), -scaled]), scaled


def test_resampled_sdm_has_the_image_geometry_and_is_exactly_the_heaviside():
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    configuration, plans, properties, original_shape = _fakes()
    sdm = _preprocessed_sdm(properties, configuration)
    logits, scaled = _accumulated(sdm)
    full = resample_sdm_to_original(scaled, properties, configuration, plans, scale=SDM_ACCUMULATION_SCALE)
    assert full.dtype == np.float32 and full.shape == (2, *original_shape)
    unscaled = resample_sdm_to_original(sdm, properties, configuration, plans)
    np.testing.assert_allclose(full, unscaled, atol=2e-3)  # float16 resolution
    # outside nnU-Net's crop: +1 (background in the label map)
    crop = np.zeros(properties["shape_before_cropping"], dtype=bool)
    crop[tuple(slice(a, b) for a, b in properties["bbox_used_for_cropping"])] = True
    outside = ~crop.transpose(plans.transpose_backward)
    assert outside.any() and np.all(full[:, outside] == 1)
    # the label map nnU-Net exports from the logits is exactly the Heaviside of the exported SDM
    labels = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, plans, configuration, LabelManager(LABELS, None), properties
    )
    assert labels.shape == original_shape and {1, 2} <= set(np.unique(labels))
    heaviside = np.argmax(np.concatenate([np.zeros_like(full[:1]), -full]), axis=0)
    assert np.array_equal(heaviside, labels)
    for k in (1, 2):
        assert full[k - 1][labels == k].max() < 0
    assert full[:, labels == 0].min() >= 0


def test_export_writes_the_label_map_and_a_4d_sdm_image(tmp_path):
    configuration, plans, properties, original_shape = _fakes()
    sdm = _preprocessed_sdm(properties, configuration, seed=1)
    logits, scaled = _accumulated(sdm)
    dataset_json = {"labels": LABELS, "file_ending": ".nii.gz"}
    # what the predictor does with one case: nnU-Net exports the logit channels, export_sdm the SDM channels
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    export_prediction_from_logits(
        logits, properties, configuration, plans, dataset_json, str(tmp_path / "case_1")
    )
    export_sdm(
        scaled,
        properties,
        configuration,
        plans,
        dataset_json,
        str(tmp_path / "case_1"),
        scale=SDM_ACCUMULATION_SCALE,
    )
    label_image = sitk.ReadImage(str(tmp_path / "case_1.nii.gz"))
    sdm_image = sitk.ReadImage(str(tmp_path / "sdm" / "case_1_sdm.nii.gz"))
    assert sdm_image.GetDimension() == 4 and sdm_image.GetSize() == (*label_image.GetSize(), 2)
    assert np.allclose(sdm_image.GetSpacing()[:3], label_image.GetSpacing())
    assert np.allclose(sdm_image.GetOrigin()[:3], label_image.GetOrigin())
    direction = np.array(sdm_image.GetDirection()).reshape(4, 4)[:3, :3]
    assert np.allclose(direction, np.array(label_image.GetDirection()).reshape(3, 3))
    written = sitk.GetArrayFromImage(sdm_image)
    assert written.dtype == np.float32 and written.shape == (2, *original_shape)
    expected = resample_sdm_to_original(
        scaled, properties, configuration, plans, scale=SDM_ACCUMULATION_SCALE
    )
    np.testing.assert_array_equal(written, expected)
    heaviside = np.argmax(np.concatenate([np.zeros_like(written[:1]), -written]), axis=0)
    assert np.array_equal(heaviside, sitk.GetArrayFromImage(label_image))


def test_check_names_a_trainer_without_sdm_head(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", trainers_path())
    predictor = SDMPredictor(device=torch.device("cpu"), save_sdm=True)
    with pytest.raises(SDMExportError, match="initialise"):
        predictor.check_sdm_export()
    predictor.network = nn.Conv3d(1, 3, 1)
    predictor.trainer_name = "nnUNetTrainer"
    predictor.label_manager = LabelManager(LABELS, None)
    predictor.plans_manager = SimpleNamespace(image_reader_writer_class=SimpleITKIO)
    with pytest.raises(SDMExportError, match="trainer nnUNetTrainer has no SDM head"):
        predictor.check_sdm_export()
    predictor.network, predictor.trainer_name = _sdm_network(3, 2), "nnUNetTrainerSDMDualHead"
    predictor.check_sdm_export()  # a segmentation head and an SDM head: fine
    predictor.network, predictor.trainer_name = _sdm_network(0, 2), "nnUNetTrainerSDM_Xue2020"
    predictor.check_sdm_export()
    predictor.plans_manager = SimpleNamespace(image_reader_writer_class=type("Tiff3DIO", (), {}))
    with pytest.raises(SDMExportError, match="Tiff3DIO"):
        predictor.check_sdm_export()
    with pytest.raises(SDMExportError, match="output folder"):
        predictor.predict_from_files("in", None)


# ----------------------------------------------------------------------------------------------------
# plot-sdm
# ----------------------------------------------------------------------------------------------------
def _case(tmp_path):
    """Image, reference and a 4D normalised SDM of 2 classes (from the reference, slightly dilated)."""
    from scipy import ndimage

    shape, spacing = (12, 40, 36), (2.5, 0.8, 0.8)
    zz, yy, xx = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    organ = ((zz - 15) / 10) ** 2 + ((yy - 16) / 9) ** 2 + ((xx - 14) / 7) ** 2 < 1
    vessel = ((yy - 24) ** 2 + (xx - 22) ** 2 < 4) & ~organ
    labels = organ.astype(np.uint8) + 2 * vessel.astype(np.uint8)
    image = 100 + 80 * organ + 250 * vessel + np.random.default_rng(0).normal(0, 10, shape)
    sdms = []
    for mask in (organ, vessel):
        inside = ndimage.distance_transform_edt(mask, spacing)
        outside = ndimage.distance_transform_edt(~mask, spacing)
        sdm = np.where(mask, -inside / inside.max(), outside / outside.max()) - 0.02
        sdms.append(sdm.astype(np.float32))

    def write(array, name):
        if array.ndim == 4:  # one volume per class, joined along a 4th dimension as predict writes it
            img = sitk.JoinSeries([sitk.GetImageFromArray(a) for a in array])
            img.SetSpacing((*reversed(spacing), 1.0))
        else:
            img = sitk.GetImageFromArray(array)
            img.SetSpacing(tuple(reversed(spacing)))
        sitk.WriteImage(img, str(tmp_path / name))
        return tmp_path / name

    (tmp_path / "sdm").mkdir()
    write(np.stack(sdms), "sdm/case_sdm.nii.gz")
    (tmp_path / "sdm" / "sdm.json").write_text(json.dumps({"classes": [1, 2]}))
    return (
        write(image.astype(np.float32), "case_0000.nii.gz"),
        write(labels, "case.nii.gz"),
        tmp_path / "sdm" / "case_sdm.nii.gz",
    )


def test_plot_sdm_command(tmp_path, capsys):
    import matplotlib.image

    from nnunet_sdm.cli import main
    from nnunet_sdm.sdm_format import read_sdm

    image, label, sdm = _case(tmp_path)
    array, spacing, cls = read_sdm(sdm, 2)
    assert cls == 2 and array.shape == (12, 40, 36) and np.allclose(spacing, (2.5, 0.8, 0.8))
    assert (
        main(["plot-sdm", str(image), str(label), str(sdm), "-o", str(tmp_path / "fig.png"), "--class", "1"])
        == 0
    )
    assert "slice" in capsys.readouterr().out
    png = matplotlib.image.imread(tmp_path / "fig.png")
    assert png.shape[0] > 300 and png.shape[1] > 300
    colours = png[..., :3].reshape(-1, 3)
    red = (colours[:, 0] > 0.9) & (colours[:, 1] < 0.2) & (colours[:, 2] < 0.2)
    assert red.sum() > 50  # the 0 level set is drawn
    assert (
        main(
            [
                "plot-sdm",
                str(image),
                str(label),
                str(sdm),
                "-o",
                str(tmp_path / "fig2.png"),
                "--class",
                "2",
                "--slice",
                "3",
                "--axis",
                "1",
            ]
        )
        == 0
    )
    with pytest.raises(ValueError, match="no SDM of class 3"):
        main(["plot-sdm", str(image), str(label), str(sdm), "-o", str(tmp_path / "x.png"), "--class", "3"])
    other = sitk.ReadImage(str(label))
    other.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(other, str(tmp_path / "wrong.nii.gz"))
    with pytest.raises(ValueError, match="geometry"):
        main(
            ["plot-sdm", str(image), str(tmp_path / "wrong.nii.gz"), str(sdm), "-o", str(tmp_path / "y.png")]
        )
