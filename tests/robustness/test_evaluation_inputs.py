"""Bad inputs to the evaluation: ``evaluate_case``, ``evaluate_folders`` and ``nnunet-sdm evaluate``.

Missing / extra cases, mismatched shapes or spacings, label values that ``dataset.json`` does not define,
truncated or corrupt files: an error that names the case's file. Empty predictions or references follow
the conventions of :mod:`nnunet_sdm.evaluation.surface` (Dice / NSD 1 and HD95 / ASSD 0 if both are empty;
Dice / NSD 0 and HD95 / ASSD = the image diagonal in mm if exactly one is).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.cli import main
from nnunet_sdm.evaluation import evaluate_case, evaluate_folders

SPACING = (2.5, 0.8, 0.8)  # numpy axis order
SHAPE = (8, 20, 16)
DIAGONAL = math.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, SPACING)))


def write(array: np.ndarray, path, spacing=SPACING, dtype=np.uint8) -> None:
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(image, str(path))


def organ_and_vessel() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:6, 4:12, 3:10] = 1
    labels[1:7, 15:17, 12:14] = 2
    return labels


@pytest.fixture
def folders(tmp_path):
    """gt/ and pred/ with case_0..case_2 (predictions equal to the references) and a dataset.json."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i in range(3):
        write(organ_and_vessel(), gt / f"case_{i}.nii.gz")
        write(organ_and_vessel(), pred / f"case_{i}.nii.gz")
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "organ": 1, "vessel": 2}}))
    return gt, pred, dataset_json


def evaluate_cli(gt, pred, *extra: str) -> int:
    return main(["evaluate", str(gt), str(pred), "-np", "1", *extra])


# ---- missing and extra cases ------------------------------------------------------------------------------
def test_prediction_without_reference_is_an_error_naming_the_case(folders):
    gt, pred, dataset_json = folders
    write(organ_and_vessel(), pred / "case_extra.nii.gz")
    with pytest.raises(
        FileNotFoundError, match=r"1 prediction\(s\) in .* have no reference in .*case_extra\.nii\.gz"
    ):
        evaluate_folders(gt, pred, [1, 2], num_workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"no reference .*case_extra\.nii\.gz"):
        evaluate_cli(gt, pred, "--dataset-json", str(dataset_json))


def test_reference_without_prediction_is_left_out_of_the_summary_and_listed(folders):
    """Default (as nnU-Net's own evaluation): the cases are the prediction files; the others are listed."""
    gt, pred, _ = folders
    (pred / "case_1.nii.gz").unlink()
    summary = evaluate_folders(gt, pred, [1, 2], num_workers=1, progress=False)
    cases = [c["prediction_file"].rsplit("/", 1)[-1] for c in summary["metric_per_case"]]
    assert cases == ["case_0.nii.gz", "case_2.nii.gz"]
    assert summary["references_without_prediction"] == ["case_1.nii.gz"]
    assert summary["mean"]["1"]["Dice"] == 1.0


def test_reference_without_prediction_warns_on_the_command_line(folders, capsys):
    gt, pred, dataset_json = folders
    (pred / "case_1.nii.gz").unlink()
    assert evaluate_cli(gt, pred, "--dataset-json", str(dataset_json)) == 0
    assert "1 reference(s)" in capsys.readouterr().err
    summary = json.loads((pred / "summary_surface.json").read_text())
    assert summary["references_without_prediction"] == ["case_1.nii.gz"]


def test_reference_without_prediction_is_an_error_when_asked(folders):
    gt, pred, dataset_json = folders
    (pred / "case_1.nii.gz").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 reference\(s\) in .* have no prediction .*case_1\.nii\.gz"
    ):
        evaluate_cli(gt, pred, "--dataset-json", str(dataset_json), "--missing-predictions", "error")
    assert not (pred / "summary_surface.json").exists()


def test_reference_without_prediction_scored_as_empty(folders):
    """Challenge scoring: a case without a submission counts as an empty prediction."""
    gt, pred, dataset_json = folders
    (pred / "case_1.nii.gz").unlink()
    assert evaluate_cli(gt, pred, "--dataset-json", str(dataset_json), "--missing-predictions", "empty") == 0
    summary = json.loads((pred / "summary_surface.json").read_text())
    cases = {c["reference_file"].rsplit("/", 1)[-1]: c for c in summary["metric_per_case"]}
    assert sorted(cases) == ["case_0.nii.gz", "case_1.nii.gz", "case_2.nii.gz"]
    assert cases["case_1.nii.gz"]["prediction_file"] is None
    for label in ("1", "2"):
        empty = cases["case_1.nii.gz"]["metrics"][label]
        assert empty["Dice"] == 0.0 and empty["n_pred"] == 0
        assert empty["HD95"] == pytest.approx(DIAGONAL) and empty["ASSD"] == pytest.approx(DIAGONAL)
        assert summary["mean"][label]["Dice"] == pytest.approx(2 / 3)
    rows = (pred / "summary_surface.csv").read_text().splitlines()
    assert sum(row.startswith("case_1,") for row in rows) == 2


def test_missing_predictions_choices_agree_with_the_library(folders):
    from nnunet_sdm.cli import build_parser
    from nnunet_sdm.evaluation.evaluate import MISSING_PREDICTIONS

    gt, pred, _ = folders
    with pytest.raises(ValueError, match="missing_predictions must be one of"):
        evaluate_folders(gt, pred, [1, 2], num_workers=1, progress=False, missing_predictions="zero")
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    (action,) = [a for a in evaluate._actions if a.dest == "missing_predictions"]
    assert tuple(action.choices) == MISSING_PREDICTIONS


def test_missing_prediction_file_for_evaluate_case_is_named(folders):
    gt, pred, _ = folders
    with pytest.raises(FileNotFoundError, match=r"no such file: .*case_9\.nii\.gz"):
        evaluate_case(gt / "case_0.nii.gz", pred / "case_9.nii.gz", [1, 2])


def test_empty_prediction_folder_is_an_error(folders, tmp_path):
    gt, _, dataset_json = folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.nii\.gz prediction files in .*empty"):
        evaluate_cli(gt, tmp_path / "empty", "--dataset-json", str(dataset_json))


# ---- geometry ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [organ_and_vessel()[:, :-1], organ_and_vessel()[0], np.stack([organ_and_vessel()] * 2)],
    ids=["one_row_less", "2d_slice", "4d"],
)
def test_shape_mismatch_is_an_error_naming_the_case(folders, bad):
    gt, pred, _ = folders
    write(bad, pred / "case_1.nii.gz", spacing=SPACING[-bad.ndim :] if bad.ndim < 4 else (1.0, *SPACING))
    with pytest.raises(
        ValueError, match=r"shape mismatch: prediction .*pred/case_1\.nii\.gz is .* reference .*gt/case_1"
    ):
        evaluate_case(gt / "case_1.nii.gz", pred / "case_1.nii.gz", [1, 2])
    with pytest.raises(ValueError, match=r"shape mismatch: prediction .*case_1\.nii\.gz"):
        evaluate_folders(gt, pred, [1, 2], num_workers=1, progress=False)


def test_spacing_mismatch_is_an_error_naming_the_case_also_from_worker_processes(folders):
    gt, pred, _ = folders
    write(organ_and_vessel(), pred / "case_2.nii.gz", spacing=(2.5, 0.8, 0.9))
    with pytest.raises(
        ValueError,
        match=r"spacing mismatch: prediction .*case_2\.nii\.gz has \(2\.5, 0\.8\d*, 0\.899\d*\) but reference",
    ):
        evaluate_folders(gt, pred, [1, 2], num_workers=2, progress=False)  # spawn-started pool


# ---- label values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["prediction", "reference"])
def test_label_value_not_in_dataset_json_is_an_error_naming_the_case(folders, role):
    gt, pred, dataset_json = folders
    labels = organ_and_vessel()
    labels[0, 0, 0] = 3
    write(labels, (pred if role == "prediction" else gt) / "case_1.nii.gz")
    message = rf"case case_1\.nii\.gz: the {role} .*case_1\.nii\.gz contains label values \[3\] .*\[1, 2\]"
    with pytest.raises(ValueError, match=message):
        evaluate_cli(gt, pred, "--dataset-json", str(dataset_json))


@pytest.mark.parametrize(("value", "dtype", "shown"), [(0.5, np.float32, r"0\.5"), (-1, np.int16, "-1")])
def test_non_integer_or_negative_label_values_are_named(folders, value, dtype, shown):
    gt, pred, _ = folders
    labels = organ_and_vessel().astype(dtype)
    labels[0, 0, 0] = value
    write(labels, pred / "case_0.nii.gz", dtype=dtype)
    with pytest.raises(
        ValueError, match=rf"case case_0\.nii\.gz: the prediction .* label values \[{shown}\]"
    ):
        evaluate_case(gt / "case_0.nii.gz", pred / "case_0.nii.gz", [1, 2])


def test_region_dataset_json_is_scored_per_region_by_the_cli(folders, tmp_path):
    gt, pred, _ = folders
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2], "vessel": 2}}))
    out = tmp_path / "summary.json"
    assert evaluate_cli(gt, pred, "--dataset-json", str(regions), "-o", str(out)) == 0
    assert set(json.loads(out.read_text())["mean"]) == {"(1, 2)", "2"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": {"background": 0, "whole": [1, "x"]}}))
    with pytest.raises(ValueError, match="label 'whole' must be an integer or a list of integers"):
        evaluate_cli(gt, pred, "--dataset-json", str(bad))


# ---- damaged files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.0])
def test_truncated_or_corrupt_prediction_is_an_error_naming_the_file(folders, keep):
    """SimpleITK itself reads a truncated .nii.gz without error, the missing voxels as 0."""
    gt, pred, _ = folders
    path = pred / "case_1.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep else b"not an image")
    with pytest.raises(ValueError, match=r"case_1\.nii\.gz: truncated or corrupt gzip file"):
        evaluate_case(gt / "case_1.nii.gz", path, [1, 2])
    with pytest.raises(ValueError, match=r"pred/case_1\.nii\.gz: truncated or corrupt gzip file"):
        evaluate_folders(gt, pred, [1, 2], num_workers=1, progress=False)


# ---- empty masks: the documented conventions ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("reference_has_vessel", "prediction_has_vessel", "expected"),
    [
        (True, False, {"Dice": 0.0, "NSD@1.0mm": 0.0, "HD95": DIAGONAL, "ASSD": DIAGONAL}),
        (False, True, {"Dice": 0.0, "NSD@1.0mm": 0.0, "HD95": DIAGONAL, "ASSD": DIAGONAL}),
        (False, False, {"Dice": 1.0, "NSD@1.0mm": 1.0, "HD95": 0.0, "ASSD": 0.0}),
    ],
    ids=["prediction_empty", "reference_empty", "both_empty"],
)
def test_empty_masks_follow_the_documented_convention(
    folders, reference_has_vessel, prediction_has_vessel, expected
):
    gt, pred, _ = folders
    for folder, has_vessel in ((gt, reference_has_vessel), (pred, prediction_has_vessel)):
        labels = organ_and_vessel()
        if not has_vessel:
            labels[labels == 2] = 0
        write(labels, folder / "case_0.nii.gz")
    vessel = evaluate_case(gt / "case_0.nii.gz", pred / "case_0.nii.gz", [1, 2], tolerances=(1.0,))[
        "metrics"
    ]["2"]
    for metric, value in expected.items():
        assert vessel[metric] == pytest.approx(value), metric
    summary = evaluate_folders(gt, pred, [1, 2], tolerances=(1.0,), num_workers=1, progress=False)
    assert all(math.isfinite(v) for v in summary["foreground_mean"].values())


def test_all_background_prediction_and_reference_case(folders):
    gt, pred, _ = folders
    for folder in (gt, pred):
        write(np.zeros(SHAPE), folder / "case_0.nii.gz")
    metrics = evaluate_case(gt / "case_0.nii.gz", pred / "case_0.nii.gz", [1, 2], tolerances=(1.0,))[
        "metrics"
    ]
    for label in ("1", "2"):
        assert metrics[label] == {
            "Dice": 1.0,
            "HD95": 0.0,
            "ASSD": 0.0,
            "NSD@1.0mm": 1.0,
            "n_ref": 0,
            "n_pred": 0,
        }


# ---- the real console command ---------------------------------------------------------------------------------
def test_nnunet_sdm_evaluate_command_reports_the_case_and_exits_non_zero(folders):
    gt, pred, dataset_json = folders
    write(organ_and_vessel()[:, :-1], pred / "case_2.nii.gz")
    command = [sys.executable, "-m", "nnunet_sdm.cli", "evaluate", str(gt), str(pred), "-np", "1"]
    result = subprocess.run([*command, "--dataset-json", str(dataset_json)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "ValueError: shape mismatch: prediction" in result.stderr and "case_2.nii.gz" in result.stderr
    assert not (pred / "summary_surface.json").exists()
