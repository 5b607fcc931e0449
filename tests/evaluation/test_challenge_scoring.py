"""FLARE22-24 scoring rules and ``nnunet-sdm evaluate`` on two folders without a dataset.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.cli import build_parser, main
from nnunet_sdm.evaluation import evaluate_case, surface_metrics
from nnunet_sdm.evaluation.challenge import CHALLENGE_SCORINGS, challenge_metrics, get_scoring

SPACING = (2.0, 1.0, 1.0)  # numpy axis order: axial slices along axis 0


def box(shape, z, y, x, value=1) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = value
    return a


def write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(SPACING)))
    sitk.WriteImage(image, str(path))


def test_nsd_uses_the_organs_tolerance_and_is_rounded():
    gt = box((10, 30, 30), (2, 8), (5, 20), (5, 20))
    pred = box((10, 30, 30), (2, 8), (8, 23), (5, 20))  # shifted 3 mm in y
    for label, (_, tolerance) in {1: ("liver", 5.0), 2: ("right kidney", 3.0), 9: ("gb", 2.0)}.items():
        scored = challenge_metrics(gt * label, pred * label, SPACING, label, get_scoring("flare22"))
        exact = surface_metrics(gt > 0, pred > 0, SPACING, tolerances=(tolerance,))
        assert scored["NSD_tolerance_mm"] == tolerance
        assert scored["NSD"] == round(exact[f"NSD@{tolerance}mm"], 4)
        assert scored["Dice"] == round(exact["Dice"], 4)
    liver = challenge_metrics(gt, pred, SPACING, 1, get_scoring("flare22"))
    gallbladder = challenge_metrics(gt * 9, pred * 9, SPACING, 9, get_scoring("flare22"))
    assert liver["NSD"] == 1.0 and gallbladder["NSD"] < 1.0  # 3 mm shift: inside 5 mm, outside 2 mm
    assert liver["Dice"] == round(liver["Dice"], 4) and len(str(liver["Dice"]).split(".")[1]) <= 4


def test_low_dice_sets_nsd_to_zero_in_flare23_and_24_only():
    gt = box((10, 30, 30), (2, 8), (5, 15), (5, 15))
    pred = box((10, 30, 30), (2, 8), (13, 23), (5, 13))  # Dice 2 * 16 / (100 + 80) = 0.178 per slice
    dice = challenge_metrics(gt, pred, SPACING, 1, get_scoring("flare22"))["Dice"]
    assert 0.1 < dice < 0.2
    assert challenge_metrics(gt, pred, SPACING, 1, get_scoring("flare22"))["NSD"] > 0  # no rule in FLARE22
    assert challenge_metrics(gt, pred, SPACING, 1, get_scoring("flare23"))["NSD"] > 0  # FLARE23: below 0.1
    assert challenge_metrics(gt, pred, SPACING, 1, get_scoring("flare24"))["NSD"] == 0.0  # FLARE24: below 0.2


def test_aorta_ivc_and_esophagus_are_scored_on_the_labelled_slices_without_the_last():
    gt = box((12, 20, 20), (3, 8), (5, 10), (5, 10))  # slices 3..7
    pred = box((12, 20, 20), (0, 12), (5, 10), (5, 10))  # all slices
    for label in (5, 6, 10):
        scored = challenge_metrics(gt * label, pred * label, SPACING, label, get_scoring("flare22"))
        assert scored["Dice"] == 1.0 and scored["NSD"] == 1.0, label
    # the last labelled slice (7) is left out, as in the official scripts: a miss there is not seen
    missing_last = box((12, 20, 20), (3, 7), (5, 10), (5, 10))
    assert challenge_metrics(gt * 5, missing_last * 5, SPACING, 5, get_scoring("flare22"))["Dice"] == 1.0
    # other organs are scored on the whole image
    liver = challenge_metrics(gt, pred, SPACING, 1, get_scoring("flare22"))
    assert liver["Dice"] == round(2 * 5 / (5 + 12), 4)


def test_empty_masks_follow_the_challenge():
    empty, organ = np.zeros((4, 8, 8), np.uint8), box((4, 8, 8), (1, 3), (2, 6), (2, 6))
    rules = get_scoring("flare24")
    assert challenge_metrics(empty, empty, SPACING, 1, rules) == {
        "Dice": 1.0,
        "NSD": 1.0,
        "NSD_tolerance_mm": 5.0,
        "n_ref": 0,
        "n_pred": 0,
    }
    assert challenge_metrics(empty, organ, SPACING, 1, rules)["NSD"] == 0.0
    assert challenge_metrics(organ, empty, SPACING, 1, rules)["Dice"] == 0.0


def test_labels_outside_the_challenge_are_refused_and_flare23_has_the_tumour():
    organ = box((4, 8, 8), (1, 3), (2, 6), (2, 6))
    with pytest.raises(ValueError, match="flare22 scores labels .* label 14 is not one of its organs"):
        challenge_metrics(organ * 14, organ * 14, SPACING, 14, get_scoring("flare22"))
    assert get_scoring("flare23").organs[14] == ("tumour", 2.0)
    with pytest.raises(ValueError, match="scoring must be one of"):
        get_scoring("flare21")


def test_cli_scoring_choices_are_the_librarys():
    commands = build_parser()._subparsers._group_actions[0].choices
    flare = commands["flare"]._subparsers._group_actions[0].choices
    for parser in (commands["evaluate"], flare["run"]):
        scoring = next(a for a in parser._actions if a.dest == "scoring")
        assert tuple(scoring.choices) == tuple(CHALLENGE_SCORINGS)


@pytest.fixture
def two_folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i in range(2):
        reference = box((8, 20, 20), (2, 6), (4, 12), (4, 12)) + box(
            (8, 20, 20), (1, 7), (14, 17), (14, 17), 2
        )
        write(reference, gt / f"case_{i}.nii.gz")
        write(np.where(reference == 2, 0, reference).astype(np.uint8), pred / f"case_{i}.nii.gz")
    return gt, pred


def test_evaluate_two_folders_without_dataset_json_infers_the_labels(two_folders, tmp_path, capsys):
    gt, pred = two_folders
    out = tmp_path / "s.json"
    assert main(["evaluate", str(gt), str(pred), "-o", str(out), "-np", "1"]) == 0
    said = capsys.readouterr().out
    assert "labels [1, 2] (from the reference masks in" in said and "no dataset.json" in said
    summary = json.loads(out.read_text())
    assert summary["mean"]["1"]["Dice"] == 1.0 and summary["mean"]["2"]["Dice"] == 0.0
    assert out.with_suffix(".csv").is_file()


def test_evaluate_with_flare_scoring_defaults_to_its_organs(two_folders, tmp_path):
    gt, pred = two_folders
    out = tmp_path / "f.json"
    assert main(["evaluate", str(gt), str(pred), "-o", str(out), "-np", "1", "--scoring", "flare24"]) == 0
    summary = json.loads(out.read_text())
    assert summary["scoring"] == "flare24"
    assert sorted(summary["mean"], key=int) == [str(v) for v in range(1, 14)]
    assert summary["mean"]["1"] == {
        "Dice": 1.0,
        "NSD": 1.0,
        "NSD_tolerance_mm": 5.0,
        "n_pred": 256.0,
        "n_ref": 256.0,
    }
    assert summary["mean"]["2"]["Dice"] == 0.0 and summary["mean"]["3"]["Dice"] == 1.0  # both empty: 1
    case = evaluate_case(gt / "case_0.nii.gz", pred / "case_0.nii.gz", [1, 2], scoring="flare22")
    assert set(case["metrics"]["1"]) == {"Dice", "NSD", "NSD_tolerance_mm", "n_ref", "n_pred"}
