"""The synthetic nnU-Net raw dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_sdm.synth import list_case_ids, make_synthetic_dataset, synthesize_case

SMALL = {"num_training": 3, "num_test": 2, "shape": (16, 40, 40), "spacing": (2.5, 0.8, 0.8)}


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return make_synthetic_dataset(tmp_path_factory.mktemp("raw"), seed=3, **SMALL)


def test_layout_and_dataset_json(dataset):
    folder = Path(dataset["folder"])
    assert folder.name == "Dataset990_SDMSynth" == dataset["dataset_name"]
    assert dataset["dataset_id"] == 990
    assert dataset["train_cases"] == ["SDMSynth_000", "SDMSynth_001", "SDMSynth_002"]
    assert dataset["test_cases"] == ["SDMSynth_003", "SDMSynth_004"]
    assert list_case_ids(folder / "imagesTr") == dataset["train_cases"] == list_case_ids(folder / "labelsTr")
    assert list_case_ids(folder / "imagesTs") == dataset["test_cases"] == list_case_ids(folder / "labelsTs")
    content = json.loads((folder / "dataset.json").read_text())
    assert content["labels"] == {"background": 0, "organ": 1, "vessel": 2}
    assert content["numTraining"] == 3 and content["file_ending"] == ".nii.gz"
    assert content["channel_names"] == {"0": "MRI"}


def test_headers_carry_the_spacing(dataset):
    folder = Path(dataset["folder"])
    for path in sorted(folder.glob("*/*.nii.gz")):
        image = _read(path)
        assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.5)), path  # SimpleITK order: x, y, z
        assert sitk.GetArrayFromImage(image).shape == (16, 40, 40), path


def test_every_case_has_both_classes(dataset):
    folder = Path(dataset["folder"])
    labels = sorted(folder.glob("labelsT*/*.nii.gz"))
    assert len(labels) == 5
    for path in labels:
        values = set(np.unique(sitk.GetArrayFromImage(_read(path))).tolist())
        assert values == {0, 1, 2}, path


def test_classes_are_visible_in_the_image():
    case = synthesize_case(0, seed=0)
    means = [case.image[case.label == v].mean() for v in range(3)]
    noise = case.image[case.label == 0].std()
    assert means[1] - means[0] > 4 * noise and means[2] - means[1] > 2 * noise


def test_deterministic(tmp_path, dataset):
    again = make_synthetic_dataset(tmp_path / "a", seed=3, **SMALL)
    other = make_synthetic_dataset(tmp_path / "b", seed=4, **SMALL)
    first, second, third = (Path(d["folder"]) for d in (dataset, again, other))
    files = sorted(p.relative_to(first) for p in first.glob("*/*.nii.gz"))
    assert len(files) == 10
    differs = 0
    for rel in files:
        a = sitk.GetArrayFromImage(_read(first / rel))
        assert a.tobytes() == sitk.GetArrayFromImage(_read(second / rel)).tobytes(), rel
        differs += a.tobytes() != sitk.GetArrayFromImage(_read(third / rel)).tobytes()
    assert differs == len(files)
    # case i does not depend on how many cases are written
    fewer = make_synthetic_dataset(tmp_path / "c", seed=3, **{**SMALL, "num_training": 2, "num_test": 0})
    rel = Path("labelsTr/SDMSynth_001.nii.gz")
    assert np.array_equal(
        sitk.GetArrayFromImage(_read(first / rel)), sitk.GetArrayFromImage(_read(Path(fewer["folder"]) / rel))
    )


def test_training_labels_are_jittered_slice_by_slice(dataset):
    folder = Path(dataset["folder"])
    for index, case_id in enumerate(dataset["train_cases"]):
        case = synthesize_case(index, shape=SMALL["shape"], spacing=SMALL["spacing"], seed=3)
        written = sitk.GetArrayFromImage(_read(folder / "labelsTr" / f"{case_id}.nii.gz"))
        assert np.array_equal(written, case.jittered)
        changed = [z for z in range(written.shape[0]) if not np.array_equal(written[z], case.label[z])]
        assert len(changed) >= 3, case_id
        # every change is an in-plane slip of at most one voxel
        for value in (1, 2):
            near_truth = ndimage.binary_dilation(case.label == value, np.ones((1, 3, 3), dtype=bool))
            assert not np.any((written == value) & ~near_truth), (case_id, value)

        # the jittered label is rougher across slices than the smooth truth
        def roughness(label):
            return np.count_nonzero(label[1:] != label[:-1])

        assert roughness(written) > roughness(case.label), case_id
    for index, case_id in enumerate(dataset["test_cases"], start=len(dataset["train_cases"])):
        case = synthesize_case(index, shape=SMALL["shape"], spacing=SMALL["spacing"], seed=3)
        written = sitk.GetArrayFromImage(_read(folder / "labelsTs" / f"{case_id}.nii.gz"))
        assert np.array_equal(written, case.label)  # test labels are the clean truth


def test_nnunet_integrity_check_passes(dataset):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(dataset["folder"], num_processes=1)


def test_rewrites_own_dataset_but_not_foreign_folders(tmp_path):
    make_synthetic_dataset(tmp_path, seed=0, **SMALL)
    info = make_synthetic_dataset(tmp_path, seed=1, **{**SMALL, "num_training": 2})
    assert len(list(Path(info["folder"], "imagesTr").iterdir())) == 2
    foreign = tmp_path / "Dataset991_SDMSynth"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({"description": "somebody's data"}))
    with pytest.raises(FileExistsError, match="not a dataset written by nnunet_sdm"):
        make_synthetic_dataset(tmp_path, dataset_id=991, **SMALL)
    with pytest.raises(FileExistsError, match="dataset id 991"):
        make_synthetic_dataset(tmp_path, dataset_id=991, name="Other", **SMALL)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset_id"):
        make_synthetic_dataset(tmp_path, dataset_id=1000)
    with pytest.raises(ValueError, match="alphanumeric"):
        make_synthetic_dataset(tmp_path, name="bad name")
    with pytest.raises(ValueError, match="3 entries"):
        synthesize_case(0, shape=(32, 32))
    with pytest.raises(FileNotFoundError):
        list_case_ids(tmp_path / "missing")


def test_multi_organ_dataset_has_every_class_and_nnunet_layout(tmp_path):
    from nnunet_sdm.synth import make_multi_organ_dataset

    info = make_multi_organ_dataset(tmp_path, num_training=2, shape=(24, 64, 56), seed=2)
    folder = Path(info["folder"])
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, **{f"organ{c}": c for c in range(1, 14)}}
    assert (
        info["train_cases"] == ["SDMOrgans_000", "SDMOrgans_001"] and info["labels"] == dataset_json["labels"]
    )
    for case in info["train_cases"]:
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        assert label.GetSize() == image.GetSize() == (56, 64, 24)
        assert np.allclose(label.GetSpacing(), (0.8, 0.8, 1.5))
        assert set(np.unique(sitk.GetArrayFromImage(label))) == set(range(14))  # all 13 organs and background


def test_region_dataset_is_nested_and_declares_nnunets_regions(tmp_path):
    from nnunet_sdm.cli import main

    assert main(["synth", str(tmp_path), "--regions", "--num-training", "3", "--num-test", "1"]) == 0
    folder = tmp_path / "Dataset994_SDMRegions"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {
        "background": 0,
        "whole tumour": [1, 2, 3],
        "tumour core": [2, 3],
        "enhancing tumour": 3,
    }
    assert meta["regions_class_order"] == [1, 2, 3]
    for path in sorted((folder / "labelsTs").glob("*.nii.gz")):  # the clean truth: nested, all three present
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert set(np.unique(label)) == {0, 1, 2, 3}
        whole, core = label > 0, np.isin(label, (2, 3))
        necrosis = label == 2
        # the enhancing rim separates necrosis from edema: no necrosis voxel touches edema or background
        assert not (ndimage.binary_dilation(necrosis) & ~core).any()
        assert ndimage.binary_erosion(whole).sum() > 0
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=1)  # nnU-Net accepts the regions


def test_sparse_dataset_leaves_most_slices_to_the_ignore_label(tmp_path):
    info = make_synthetic_dataset(
        tmp_path, dataset_id=995, name="Sparse", num_training=3, num_test=1, ignore_label=True
    )
    folder = Path(info["folder"])
    assert info["labels"]["ignore"] == 3
    for path in sorted((folder / "labelsTr").glob("*.nii.gz")):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        unlabelled = [(label[z] == 3).all() for z in range(label.shape[0])]
        assert sum(unlabelled) == label.shape[0] - len(range(unlabelled.index(False), label.shape[0], 3))
        assert not (label[~np.array(unlabelled)] == 3).any()
    test_label = sitk.GetArrayFromImage(sitk.ReadImage(str(next((folder / "labelsTs").glob("*.nii.gz")))))
    assert 3 not in np.unique(test_label)
    with pytest.raises(ValueError, match="labelled_every"):
        make_synthetic_dataset(tmp_path, dataset_id=995, name="Sparse", ignore_label=True, labelled_every=0)
