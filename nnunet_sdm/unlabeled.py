"""Unlabeled images in an nnU-Net dataset: where they go, and their preprocessing with the dataset's plans.

nnU-Net trains on labeled cases only. Semi-supervised trainers (``nnUNetTrainerSDM_SemiSupervised``) also
learn from images without labels; this module gives them nnU-Net's layout and preprocessing.

Raw layout: ``nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/{case}_{XXXX}{file_ending}``, named as in
``imagesTr``: one file per channel of dataset.json's ``channel_names``, no labels. dataset.json stays as it
is (``numTraining`` counts the labeled cases), so every nnU-Net command sees the dataset it saw before.

Preprocessed: ``nnUNet_preprocessed/DatasetXXX_Name/{data_identifier}_unlabeled/``, written by
``nnunet-sdm preprocess-unlabeled`` with the configuration's own preprocessor (transpose, crop to the
nonzero region, normalisation with the dataset's intensity statistics, resampling to the configuration's
spacing) in nnU-Net's file format, next to the labeled cases' ``{data_identifier}/``. Each case's
segmentation is nnU-Net's crop mask (0 inside the image's nonzero region, -1 outside) and it has no
foreground locations: a loader crops its patches uniformly, and no loss may read its labels.

Checked before anything is written, each error naming the file or case: the folder exists and holds
images, every file name is ``{case}_{XXXX}{file_ending}``, every case has exactly the dataset's channels, a
case's channels share one geometry, and each spacing lies within a factor 2 of the labeled cases' spacing
range (nnU-Net would resample anything, but an image at another spacing is most likely another kind of
image; ``allow_other_spacing`` accepts it). A failed run leaves an earlier preprocessed folder as it was.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

UNLABELED_IMAGES = "imagesUnlabeled"
UNLABELED_SUFFIX = "_unlabeled"
#: spacings more than this factor outside the labeled cases' range are refused
SPACING_FACTOR = 2.0


class UnlabeledDataError(ValueError):
    """Unlabeled images that cannot be used: the message names the folder, file or case."""


def unlabeled_folder(raw_dataset_folder: str | Path) -> Path:
    return Path(raw_dataset_folder) / UNLABELED_IMAGES


def preprocessed_unlabeled_folder(preprocessed_dataset_folder: str | Path, data_identifier: str) -> Path:
    """Where the unlabeled cases of one configuration are (``{data_identifier}_unlabeled``)."""
    return Path(preprocessed_dataset_folder) / f"{data_identifier}{UNLABELED_SUFFIX}"


def unlabeled_cases(raw_dataset_folder: str | Path, dataset_json: dict) -> dict[str, list[str]]:
    """Case identifier -> its image files in channel order, from ``imagesUnlabeled``; checks the layout."""
    folder = unlabeled_folder(raw_dataset_folder)
    ending = dataset_json["file_ending"]
    channels = len(dataset_json["channel_names"])
    if not folder.is_dir():
        raise UnlabeledDataError(
            f"{folder}: no such folder. Put the unlabeled images there, named as in imagesTr: "
            f"{{case}}_0000{ending}" + (f" ... {{case}}_{channels - 1:04d}{ending}" if channels > 1 else "")
        )
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in files if p.name.endswith(ending)]
    if not images:
        found = f" (found {[p.name for p in files[:5]]})" if files else ""
        raise UnlabeledDataError(f"{folder}: no {ending} images{found}")
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    by_case: dict[str, dict[int, str]] = {}
    for path in images:
        match = pattern.match(path.name)
        if match is None:
            raise UnlabeledDataError(
                f"{path}: not named {{case}}_{{XXXX}}{ending} (XXXX: the channel, 0000 for the first)"
            )
        by_case.setdefault(match.group(1), {})[int(match.group(2))] = str(path)
    expected = set(range(channels))
    for case, found in by_case.items():
        if set(found) != expected:
            missing = sorted(expected - set(found))
            extra = sorted(set(found) - expected)
            what = "; ".join(
                part
                for part in (
                    f"missing channel(s) {', '.join(f'{c:04d}' for c in missing)}" if missing else "",
                    f"channel(s) {', '.join(f'{c:04d}' for c in extra)} not in dataset.json" if extra else "",
                )
                if part
            )
            raise UnlabeledDataError(
                f"{folder}: case {case}: {what} (dataset.json channel_names: {dataset_json['channel_names']})"
            )
    return {case: [found[c] for c in range(channels)] for case, found in sorted(by_case.items())}


def spacing_range(preprocessed_dataset_folder: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(min, max) per axis of the labeled cases' spacings, from nnU-Net's dataset_fingerprint.json."""
    fingerprint = Path(preprocessed_dataset_folder) / "dataset_fingerprint.json"
    if not fingerprint.is_file():
        return None
    spacings = np.asarray(json.loads(fingerprint.read_text())["spacings"], dtype=float)
    return spacings.min(0), spacings.max(0)


def check_spacing(case: str, spacing: Sequence[float], allowed: tuple[np.ndarray, np.ndarray] | None) -> None:
    spacing = np.asarray(spacing, dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise UnlabeledDataError(
            f"unlabeled case {case}: spacing {spacing.tolist()} is not positive and finite"
        )
    if allowed is None:
        return
    low, high = allowed
    if spacing.shape != low.shape:
        raise UnlabeledDataError(
            f"unlabeled case {case}: {spacing.size}-d spacing {spacing.tolist()}, the labeled cases have "
            f"{low.size}-d images"
        )
    if np.any(spacing < low / SPACING_FACTOR) or np.any(spacing > high * SPACING_FACTOR):
        raise UnlabeledDataError(
            f"unlabeled case {case}: spacing {spacing.round(4).tolist()} mm is more than {SPACING_FACTOR:g}x "
            f"outside the labeled cases' range {low.round(4).tolist()} .. {high.round(4).tolist()} mm; if "
            "these images belong to the dataset anyway, pass --allow-other-spacing"
        )


def _read_case(case: str, files: list[str], reader_class) -> tuple[np.ndarray, dict]:
    try:
        return reader_class().read_images(files)
    except Exception as error:  # nnU-Net's readers raise bare RuntimeErrors on mismatched channels
        raise UnlabeledDataError(
            f"unlabeled case {case}: cannot read {[os.path.basename(f) for f in files]} as one image "
            f"({type(error).__name__}: {error}); its channels must share shape, spacing and orientation"
        ) from None


def _preprocess_case(
    case: str,
    files: list[str],
    output_folder: str,
    plans: dict,
    configuration: str,
    dataset_json: dict,
    allowed_spacing: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[int, ...]:
    """One case with the configuration's preprocessor, written as nnU-Net writes labeled cases."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import comp_blosc2_params
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    data, properties = _read_case(case, files, plans_manager.image_reader_writer_class)
    check_spacing(case, properties["spacing"], allowed_spacing)
    preprocessor_class = configuration_manager.preprocessor_class
    preprocessor = preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case_npy(
        data, None, properties, plans_manager, configuration_manager, dataset_json
    )
    properties["class_locations"] = {}  # no labels: patches are cropped uniformly
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    patch = tuple(configuration_manager.patch_size)
    blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(
        data,
        seg,
        properties,
        os.path.join(output_folder, case),
        chunks=chunks,
        blocks=blocks,
        chunks_seg=chunks_seg,
        blocks_seg=blocks_seg,
    )
    return tuple(int(n) for n in data.shape[1:])


def preprocess_unlabeled(
    dataset: str | int,
    configurations: Sequence[str] = ("3d_fullres",),
    plans_identifier: str = "nnUNetPlans",
    num_processes: int = 2,
    allow_other_spacing: bool = False,
    announce=print,
) -> dict[str, Path]:
    """Preprocess ``imagesUnlabeled`` of a planned dataset for each configuration; returns the folders.

    The dataset must have been planned (and its labeled cases preprocessed) with ``plans_identifier``:
    the unlabeled cases use its plans and the labeled cases' intensity statistics.
    """
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if nnUNet_raw is None or nnUNet_preprocessed is None:
        raise UnlabeledDataError("set nnUNet_raw and nnUNet_preprocessed (nnU-Net's environment variables)")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as error:
        raise UnlabeledDataError(f"dataset {dataset}: {error}") from None
    preprocessed = Path(nnUNet_preprocessed) / dataset_name
    plans_file = preprocessed / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise UnlabeledDataError(
            f"{plans_file}: no such plans; plan and preprocess the labeled cases first "
            f"(nnUNetv2_plan_and_preprocess -d {dataset})"
        )
    plans = json.loads(plans_file.read_text())
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    unknown = [c for c in configurations if c not in plans["configurations"]]
    if unknown:
        raise UnlabeledDataError(
            f"{plans_file}: no configuration {unknown}; it has {sorted(plans['configurations'])}"
        )
    cases = unlabeled_cases(Path(nnUNet_raw) / dataset_name, dataset_json)
    allowed = None if allow_other_spacing else spacing_range(preprocessed)
    written: dict[str, Path] = {}
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)  # resolves configurations that inherit from others
    for configuration in configurations:
        identifier = plans_manager.get_configuration(configuration).data_identifier
        final = preprocessed_unlabeled_folder(preprocessed, identifier)
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        announce(f"{dataset_name} {configuration}: preprocessing {len(cases)} unlabeled cases -> {final}")
        jobs = [
            (case, files, str(staging), plans, configuration, dataset_json, allowed)
            for case, files in cases.items()
        ]
        try:
            if num_processes <= 1:
                for job in jobs:
                    _preprocess_case(*job)
            else:
                with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                    pool.starmap(_preprocess_case, jobs)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        written[configuration] = final
    return written
