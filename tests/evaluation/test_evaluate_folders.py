"""evaluate_case / evaluate_folders / write_summary on small NIfTI files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.evaluation import (
    evaluate_case,
    evaluate_folders,
    labels_from_dataset_json,
    surface_metrics,
    write_summary,
)

SPACING = (2.0, 0.8, 1.0)  # numpy axis order
SHAPE = (10, 20, 16)


def _write(array: np.ndarray, path, spacing=SPACING) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(reversed(spacing)))
    sitk.WriteImage(image, str(path))


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros(SHAPE, dtype=np.uint8)
    z0, y0, x0 = rng.integers(2, 4), rng.integers(3, 8), rng.integers(3, 6)
    gt[z0 : z0 + 5, y0 : y0 + 9, x0 : x0 + 7] = 1
    gt[2:8, 16:18, 12:14] = 2
    pred = np.roll(gt, (int(rng.integers(-1, 2)), int(rng.integers(-2, 3))), axis=(0, 1))
    return gt, pred


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    arrays = {}
    for i in range(3):
        gt, pred = _case(rng)
        if i == 2:
            pred[pred == 2] = 0  # the vessel is missed in case 2
        _write(gt, gt_dir / f"case_{i}.nii.gz")
        _write(pred, pred_dir / f"case_{i}.nii.gz")
        arrays[f"case_{i}"] = (gt, pred)
    (pred_dir / "plans.json").write_text("{}")  # other files in a prediction folder are ignored
    return gt_dir, pred_dir, arrays


def test_evaluate_case_matches_array_metrics(folders):
    gt_dir, pred_dir, arrays = folders
    result = evaluate_case(
        gt_dir / "case_0.nii.gz", pred_dir / "case_0.nii.gz", [1, 2], tolerances=(1.0, 2.0)
    )
    assert result["reference_file"].endswith("case_0.nii.gz")
    assert set(result["metrics"]) == {"1", "2"}
    gt, pred = arrays["case_0"]
    header_spacing = tuple(
        reversed(sitk.ReadImage(str(gt_dir / "case_0.nii.gz")).GetSpacing())
    )  # float32 in NIfTI
    assert header_spacing == pytest.approx(SPACING)
    for label in (1, 2):
        expected = surface_metrics(gt == label, pred == label, header_spacing, (1.0, 2.0))
        got = result["metrics"][str(label)]
        assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-12)
        assert got["n_ref"] == int((gt == label).sum()) and got["n_pred"] == int((pred == label).sum())


def test_missing_structure_gets_the_image_diagonal(folders):
    gt_dir, pred_dir, _ = folders
    vessel = evaluate_case(gt_dir / "case_2.nii.gz", pred_dir / "case_2.nii.gz", [1, 2])["metrics"]["2"]
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, SPACING)))
    assert vessel["Dice"] == 0.0 and vessel["NSD@1.0mm"] == 0.0
    assert vessel["HD95"] == pytest.approx(diagonal) and vessel["ASSD"] == pytest.approx(diagonal)


def test_evaluate_case_errors(tmp_path):
    gt = np.zeros(SHAPE, dtype=np.uint8)
    gt[2:5, 2:5, 2:5] = 1
    _write(gt, tmp_path / "ref.nii.gz")
    _write(gt[:, :-1], tmp_path / "small.nii.gz")
    _write(gt, tmp_path / "spacing.nii.gz", spacing=(1.0, 0.8, 1.0))
    bad = gt.copy()
    bad[0, 0, 0] = 7
    _write(bad, tmp_path / "case_7.nii.gz")
    with pytest.raises(ValueError, match=r"shape mismatch.*small\.nii\.gz.*ref\.nii\.gz"):
        evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "small.nii.gz", [1])
    with pytest.raises(ValueError, match=r"spacing mismatch.*spacing\.nii\.gz.*ref\.nii\.gz"):
        evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "spacing.nii.gz", [1])
    with pytest.raises(ValueError, match=r"case case_7\.nii\.gz: the prediction .* label values \[7\]"):
        evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "case_7.nii.gz", [1])
    with pytest.raises(FileNotFoundError, match="nothere"):
        evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "nothere.nii.gz", [1])


@pytest.mark.parametrize("num_workers", [1, 2])
def test_evaluate_folders_summary(folders, num_workers, tmp_path):
    gt_dir, pred_dir, _ = folders
    summary = evaluate_folders(
        gt_dir, pred_dir, [1, 2], tolerances=(1.0,), num_workers=num_workers, progress=False
    )
    assert set(summary) == {
        "metric_per_case",
        "mean",
        "foreground_mean",
        "references_without_prediction",
        "missing_predictions",
        "scoring",
        "ignore_label",
    }
    assert summary["references_without_prediction"] == []
    cases = summary["metric_per_case"]
    assert [c["prediction_file"].rsplit("/", 1)[-1] for c in cases] == [f"case_{i}.nii.gz" for i in range(3)]
    names = {"Dice", "HD95", "ASSD", "NSD@1.0mm", "n_ref", "n_pred"}
    assert all(set(c["metrics"]["1"]) == names for c in cases)
    for label in ("1", "2"):
        for metric in names:
            expected = np.mean([c["metrics"][label][metric] for c in cases])
            assert summary["mean"][label][metric] == pytest.approx(expected)
    fg = (summary["mean"]["1"]["Dice"] + summary["mean"]["2"]["Dice"]) / 2
    assert summary["foreground_mean"]["Dice"] == pytest.approx(fg)

    write_summary(summary, tmp_path / "out" / "summary.json", tmp_path / "out" / "summary.csv")
    loaded = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert loaded["mean"]["2"]["HD95"] == pytest.approx(summary["mean"]["2"]["HD95"])
    with open(tmp_path / "out" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert rows[0]["case"] == "case_0" and rows[0]["label"] == "1"
    assert float(rows[5]["Dice"]) == pytest.approx(cases[2]["metrics"]["2"]["Dice"])


def test_evaluate_folders_errors(folders, tmp_path):
    gt_dir, pred_dir, _ = folders
    (gt_dir / "case_1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"no reference.*case_1\.nii\.gz"):
        evaluate_folders(gt_dir, pred_dir, [1, 2], num_workers=1, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.nii.gz prediction files"):
        evaluate_folders(gt_dir, empty, [1, 2], progress=False)
    with pytest.raises(ValueError, match="no foreground label"):
        evaluate_folders(gt_dir, pred_dir, [0], progress=False)


def test_labels_from_dataset_json(tmp_path):
    (tmp_path / "labelsTs").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "vessel": 2}}))
    assert labels_from_dataset_json(None, tmp_path / "labelsTs") == [1, 2]
    assert labels_from_dataset_json(tmp_path / "dataset.json") == [1, 2]
    (tmp_path / "regions.json").write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2]}}))
    assert labels_from_dataset_json(tmp_path / "regions.json") == [(1, 2)]  # regions: scored as unions
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        labels_from_dataset_json(None, tmp_path / "labelsTs" / "nested")


def test_regions_and_the_ignore_label_are_scored_as_nnunet_scores_them(tmp_path):
    """A region is the union of its labels (BraTS: whole tumour = 1, 2, 3), keyed as nnU-Net keys it; the
    reference's ignore voxels are left out of both masks, so a prediction there costs nothing."""
    import SimpleITK as sitk

    from nnunet_sdm.evaluation import evaluate_folders

    gt = np.zeros((6, 20, 20), dtype=np.uint8)
    gt[1:5, 4:16, 4:16] = 1
    gt[2:4, 6:14, 6:14] = 3
    gt[2:4, 8:12, 8:12] = 2
    pred = gt.copy()
    pred[2:4, 6:14, 6:14] = 1  # the core predicted as edema: whole tumour right, core missed
    sparse = gt.copy()
    sparse[:, :, :3] = 4  # unlabelled columns in the reference
    pred_sparse = gt.copy()
    pred_sparse[:, :, :2] = 1  # a false positive that only the unknown voxels could judge
    for folder, array in (("gt", gt), ("pred", pred), ("gt_sparse", sparse), ("pred_sparse", pred_sparse)):
        (tmp_path / folder).mkdir()
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(image, str(tmp_path / folder / "case.nii.gz"))
    regions = [(1, 2, 3), (2, 3), 3]
    summary = evaluate_folders(tmp_path / "gt", tmp_path / "pred", regions, num_workers=1, progress=False)
    assert set(summary["mean"]) == {"(1, 2, 3)", "(2, 3)", "3"}
    assert summary["mean"]["(1, 2, 3)"]["Dice"] == 1.0 and summary["mean"]["(1, 2, 3)"]["HD95"] == 0.0
    assert summary["mean"]["(2, 3)"]["Dice"] == 0.0 and summary["mean"]["3"]["Dice"] == 0.0
    with_fp = evaluate_folders(
        tmp_path / "gt", tmp_path / "pred_sparse", [1, 2, 3], num_workers=1, progress=False
    )
    assert with_fp["mean"]["1"]["Dice"] < 1.0
    ignored = evaluate_folders(
        tmp_path / "gt_sparse",
        tmp_path / "pred_sparse",
        [1, 2, 3],
        num_workers=1,
        progress=False,
        ignore_label=4,
    )
    assert ignored["ignore_label"] == 4
    for label in ("1", "2", "3"):
        assert ignored["mean"][label]["Dice"] == 1.0 and ignored["mean"][label]["HD95"] == 0.0
    with pytest.raises(ValueError, match="contains label values \\[4\\]"):
        evaluate_folders(
            tmp_path / "gt_sparse", tmp_path / "pred_sparse", [1, 2, 3], num_workers=1, progress=False
        )
