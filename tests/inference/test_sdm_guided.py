"""SDM-guided post-processing: components the SDM head places outside are removed, the others kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.cli import main
from nnunet_sdm.inference.sdm_guided import SDMGuidedError, remove_components_outside_sdm
from nnunet_sdm.sdm_format import sdm_info, sdm_path, write_sdm_info


def scene():
    labels = np.zeros((8, 20, 20), dtype=np.uint8)
    labels[2:6, 2:9, 2:9] = 1  # the organ: the SDM head agrees (deep inside)
    labels[3:5, 14:16, 14:16] = 1  # a stray blob of class 1: the SDM head says outside
    labels[2:6, 12:18, 2:6] = 2  # class 2: agrees
    sdm = np.ones((2, *labels.shape), dtype=np.float32)
    sdm[0][2:6, 2:9, 2:9] = -0.6
    sdm[0][3:5, 14:16, 14:16] = 0.05  # positive: outside
    sdm[1][2:6, 12:18, 2:6] = -0.1  # shallow: 0.5 mm inside at tau = 5 mm
    return labels, sdm


def test_removes_exactly_the_components_the_sdm_places_outside():
    labels, sdm = scene()
    out, removed = remove_components_outside_sdm(labels, sdm, [1, 2], threshold=0.0)
    assert removed == {1: 1, 2: 0}
    expected = labels.copy()
    expected[3:5, 14:16, 14:16] = 0
    assert np.array_equal(out, expected) and out is not labels
    deeper, removed = remove_components_outside_sdm(labels, sdm, [1, 2], threshold=-0.2)  # 1 mm at tau 5
    # class 2's only component is too shallow, but a class is never emptied: it stays
    assert (
        removed == {1: 1, 2: 0}
        and (deeper == 2).sum() == (labels == 2).sum()
        and (deeper == 1).sum() == 4 * 7 * 7
    )
    # all components of class 1 outside: the one the SDM places deepest stays
    outside = sdm.copy()
    outside[0][2:6, 2:9, 2:9] = 0.3
    kept, removed = remove_components_outside_sdm(labels, outside, [1, 2], threshold=0.0)
    assert (
        removed[1] == 1 and (kept == 1).sum() == 2 * 2 * 2
    )  # the blob (0.05) is deeper than the organ (0.3)
    with pytest.raises(SDMGuidedError, match="does not hold one map"):
        remove_components_outside_sdm(labels, sdm[:1], [1, 2], 0.0)


def write(array, path, spacing=(0.8, 0.8, 2.5)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_cli_filters_a_save_sdm_folder_and_refuses_what_it_cannot(tmp_path, capsys):
    labels, sdm = scene()
    pred = tmp_path / "pred"
    write(labels, pred / "case.nii.gz")
    write(np.moveaxis(sdm, 0, -1), sdm_path(pred / "case", ".nii.gz"))  # classes as vector components
    info = sdm_info([1, 2], {1: "organ", 2: "vessel"}, ".nii.gz", "nnUNetTrainerSDM", 5.0, False, 0.5, True)
    write_sdm_info(pred, info)
    assert main(["sdm-guided", str(pred), "-o", str(tmp_path / "out"), "--depth-mm", "0.5"]) == 0
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case.nii.gz")))
    assert (out == 1).sum() == 4 * 7 * 7 and (out == 2).sum() == (labels == 2).sum()
    record = json.loads((tmp_path / "out" / "sdm_guided.json").read_text())
    assert record["removed"] == {"case.nii.gz": {"1": 1, "2": 0}} and record["depth_mm"] == 0.5
    write_sdm_info(pred, {**info, "truncation_mm": None, "trainer": "nnUNetTrainerSDM_Xue2020"})
    assert main(["sdm-guided", str(pred), "-o", str(tmp_path / "out2")]) == 2
    assert "nnUNetTrainerSDM_Xue2020 predicts per-patch normalised SDMs" in capsys.readouterr().err
    assert main(["sdm-guided", str(tmp_path), "-o", str(tmp_path / "out3")]) == 2
    assert "predict with `nnunet-sdm predict --save-sdm` first" in capsys.readouterr().err
