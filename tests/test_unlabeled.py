"""Unlabeled images: the raw layout's checks, and ``nnunet-sdm preprocess-unlabeled`` on a planned dataset."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from nnunet_sdm.synth import _write
from nnunet_sdm.unlabeled import (
    UNLABELED_IMAGES,
    UnlabeledDataError,
    check_spacing,
    preprocessed_unlabeled_folder,
    unlabeled_cases,
)
from tests.conftest import PLANS, UNLABELED_CASES, run

TWO_CHANNELS = {
    "channel_names": {"0": "T1", "1": "T2"},
    "file_ending": ".nii.gz",
    "labels": {"background": 0},
}


def _image(path, spacing=(1.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(np.zeros((4, 5, 6), np.float32), spacing, path)


def test_cases_are_grouped_by_identifier_in_channel_order(tmp_path):
    for case in ("b", "a"):
        for channel in (1, 0):
            _image(tmp_path / UNLABELED_IMAGES / f"{case}_{channel:04d}.nii.gz")
    cases = unlabeled_cases(tmp_path, TWO_CHANNELS)
    assert list(cases) == ["a", "b"]
    assert [f.rsplit("/", 1)[1] for f in cases["a"]] == ["a_0000.nii.gz", "a_0001.nii.gz"]


@pytest.mark.parametrize(
    "files, message",
    [
        (None, r"imagesUnlabeled: no such folder\. Put the unlabeled images there.*_0001\.nii\.gz"),
        ([], r"imagesUnlabeled: no \.nii\.gz images"),
        (["notes.txt"], r"no \.nii\.gz images \(found \['notes\.txt'\]\)"),
        (["case.nii.gz"], r"case\.nii\.gz: not named \{case\}_\{XXXX\}\.nii\.gz"),
        (["x_0000.nii.gz"], r"case x: missing channel\(s\) 0001"),
        (
            ["x_0000.nii.gz", "x_0001.nii.gz", "x_0002.nii.gz"],
            r"case x: channel\(s\) 0002 not in dataset\.json",
        ),
    ],
)
def test_layout_errors_name_the_folder_file_or_case(tmp_path, files, message):
    if files is not None:
        (tmp_path / UNLABELED_IMAGES).mkdir()
        for name in files:
            (tmp_path / UNLABELED_IMAGES / name).write_bytes(b"")
    with pytest.raises(UnlabeledDataError, match=message):
        unlabeled_cases(tmp_path, TWO_CHANNELS)


def test_spacing_outside_the_labeled_range_is_refused():
    labeled = (np.array([1.0, 0.8, 0.8]), np.array([1.5, 1.0, 1.0]))
    check_spacing("ok", (2.9, 0.5, 1.9), labeled)  # within a factor 2
    with pytest.raises(
        UnlabeledDataError, match=r"case far: spacing \[5\.0, 0\.8, 0\.8\] mm is more than 2x"
    ):
        check_spacing("far", (5.0, 0.8, 0.8), labeled)
    with pytest.raises(UnlabeledDataError, match="case flat: 2-d spacing"):
        check_spacing("flat", (1.0, 1.0), labeled)
    with pytest.raises(UnlabeledDataError, match="not positive and finite"):
        check_spacing("zero", (0.0, 1.0, 1.0), None)
    check_spacing("any", (9.0, 9.0, 9.0), None)  # --allow-other-spacing


def test_preprocessed_with_the_plans_in_nnunets_format(planned_synthetic):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    plans = json.loads((planned_synthetic["preprocessed"] / f"{PLANS}.json").read_text())
    identifier = plans["configurations"]["3d_fullres"]["data_identifier"]
    folder = preprocessed_unlabeled_folder(planned_synthetic["preprocessed"], identifier)
    dataset = infer_dataset_class(str(folder))(str(folder))
    assert sorted(dataset.identifiers) == planned_synthetic["unlabeled_cases"]
    assert len(dataset.identifiers) == UNLABELED_CASES
    labeled_folder = planned_synthetic["preprocessed"] / identifier
    labeled = infer_dataset_class(str(labeled_folder))(str(labeled_folder))
    data, seg, _, properties = dataset.load_case(dataset.identifiers[0])
    reference, _, _, _ = labeled.load_case(labeled.identifiers[0])
    assert data.shape == reference.shape and data.dtype == reference.dtype  # same plans: same grid here
    assert abs(float(np.mean(data))) < 1.0  # normalised with the dataset's intensity statistics
    assert set(np.unique(seg[:])) <= {0, -1} and properties["class_locations"] == {}


def test_a_failed_run_keeps_the_earlier_folder(planned_synthetic):
    raw = planned_synthetic["raw"]
    plans = json.loads((planned_synthetic["preprocessed"] / f"{PLANS}.json").read_text())
    identifier = plans["configurations"]["3d_fullres"]["data_identifier"]
    folder = preprocessed_unlabeled_folder(planned_synthetic["preprocessed"], identifier)
    before = sorted(p.name for p in folder.iterdir())
    stray = raw / UNLABELED_IMAGES / "far_0000.nii.gz"
    _image(stray, spacing=(25.0, 8.0, 8.0))
    command = [sys.executable, "-m", "nnunet_sdm.cli", "preprocess-unlabeled", "-d", "990", "-p", PLANS]
    try:
        with pytest.raises(Exception, match=r"preprocess-unlabeled: error: unlabeled case far: spacing"):
            run([*command, "-np", "1"], planned_synthetic["env"])
    finally:
        stray.unlink()
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not folder.with_name(folder.name + ".partial").exists()
