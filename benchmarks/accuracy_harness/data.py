"""Data staging and the manifest: training cases into ``OUT/nnUNet_raw``, test cases into ``OUT/test``,
nnU-Net's 5-fold split, and the settings that make the trainers of one output folder comparable."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_sdm.dataset_json import evaluated_label_names
from nnunet_sdm.unlabeled import UNLABELED_IMAGES

from .settings import COMPARABLE_KEYS, CONFIGURATION, MANIFEST, N_FOLDS, SPLIT_SEED, BenchmarkError, Settings


@dataclass
class Data:
    dataset_name: str
    dataset_id: int
    raw: Path  # OUT/nnUNet_raw/DatasetXXX_Name (training cases only)
    test_images: Path
    test_labels: Path
    file_ending: str
    labels: dict[int, str]
    train_cases: list[str]
    test_cases: list[str]
    test_source: str
    channels: list[str] = field(default_factory=list)
    #: training cases whose labels are withheld (images in ``raw/imagesUnlabeled``); empty: none
    unlabeled_cases: list[str] = field(default_factory=list)


def dataset_id_of(folder: Path) -> int:
    match = re.fullmatch(r"Dataset(\d{3})_[A-Za-z0-9_-]+", folder.name)
    if not match:
        raise BenchmarkError(f"{folder}: not an nnU-Net raw dataset folder name (DatasetXXX_Name)")
    return int(match.group(1))


def case_ids(labels_dir: Path, file_ending: str) -> list[str]:
    if not labels_dir.is_dir():
        raise BenchmarkError(f"{labels_dir}: no such folder")
    cases = sorted(p.name[: -len(file_ending)] for p in labels_dir.iterdir() if p.name.endswith(file_ending))
    if not cases:
        raise BenchmarkError(f"{labels_dir}: no *{file_ending} label files")
    return cases


def choose_test_cases(cases: list[str], n_test: int, seed: int) -> list[str]:
    """``n_test`` of ``cases`` (sorted first), drawn without replacement by ``numpy.random.default_rng(seed)``."""
    cases = sorted(cases)
    if not 0 < n_test < len(cases):
        raise BenchmarkError(f"cannot hold out {n_test} of {len(cases)} cases")
    chosen = np.random.default_rng(seed).choice(len(cases), size=n_test, replace=False)
    return sorted(cases[i] for i in chosen)


def read_case_list(path: Path) -> list[str]:
    content = json.loads(Path(path).read_text())
    cases = content["test_cases"] if isinstance(content, dict) else content
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases) or not cases:
        raise BenchmarkError(f"{path}: expected a non-empty list of case identifiers under 'test_cases'")
    return sorted(cases)


def _image_files(images_dir: Path, case: str, file_ending: str, n_channels: int) -> list[Path]:
    files = [images_dir / f"{case}_{c:04d}{file_ending}" for c in range(n_channels)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise BenchmarkError(f"{images_dir}: missing image file(s) {missing} of case {case}")
    return files


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        if target.is_symlink() and Path(os.readlink(target)) == source:
            return
        target.unlink()
    target.symlink_to(source)


def sync_links(folder: Path, wanted: dict[str, Path]) -> None:
    """Make ``folder`` hold exactly the symlinks ``wanted`` (name -> source)."""
    folder.mkdir(parents=True, exist_ok=True)
    for existing in folder.iterdir():
        if existing.name not in wanted:
            existing.unlink()
    for name, source in wanted.items():
        _link(source, folder / name)


def prepare_data(settings: Settings) -> Data:
    """Link the training cases into ``OUT/nnUNet_raw`` and the test cases into ``OUT/test``."""
    raw = settings.raw
    dataset_json = raw / "dataset.json"
    if not dataset_json.is_file():
        raise BenchmarkError(f"{raw}: no dataset.json (is --raw an nnU-Net raw dataset folder?)")
    meta = json.loads(dataset_json.read_text())
    file_ending = meta.get("file_ending", ".nii.gz")
    channels = list(meta.get("channel_names", meta.get("modality", {"0": "image"})).values())
    try:
        labels = evaluated_label_names(meta)  # labels, or regions (tuples of labels) scored as their unions
    except ValueError as error:
        raise BenchmarkError(f"{dataset_json}: {error}") from None
    all_cases = case_ids(raw / "labelsTr", file_ending)

    if settings.test_raw is not None:
        test_root = settings.test_raw
        has_ts = (test_root / "labelsTs").is_dir() and any((test_root / "labelsTs").glob(f"*{file_ending}"))
        sub = ("imagesTs", "labelsTs") if has_ts else ("imagesTr", "labelsTr")
        test_images_src, test_labels_src = test_root / sub[0], test_root / sub[1]
        test_cases = case_ids(test_labels_src, file_ending)
        train_cases = all_cases
        overlap = sorted(set(test_cases) & set(train_cases))
        if overlap:
            raise BenchmarkError(
                f"{len(overlap)} test case(s) of {test_labels_src} are also training cases of {raw}: {overlap[:5]}"
            )
        source = f"--test-raw {test_root}"
    else:
        test_images_src, test_labels_src = raw / "imagesTr", raw / "labelsTr"
        if settings.test_cases_file is not None:
            test_cases = read_case_list(settings.test_cases_file)
            unknown = sorted(set(test_cases) - set(all_cases))
            if unknown:
                raise BenchmarkError(
                    f"{settings.test_cases_file}: {len(unknown)} case(s) not in {raw / 'labelsTr'}: {unknown[:5]}"
                )
            source = f"fixed list {settings.test_cases_file}"
        else:
            n_test = max(1, round(settings.test_fraction * len(all_cases)))
            test_cases = choose_test_cases(all_cases, n_test, settings.seed)
            source = f"{n_test} of {len(all_cases)} cases drawn with seed {settings.seed}"
        held_out = set(test_cases)
        train_cases = [c for c in all_cases if c not in held_out]
    unlabeled_cases: list[str] = []
    if settings.labeled_cases is not None:
        if settings.labeled_cases >= len(train_cases):
            raise BenchmarkError(
                f"--labeled-cases {settings.labeled_cases}: there are only {len(train_cases)} training cases"
            )
        labeled = set(choose_test_cases(train_cases, settings.labeled_cases, SPLIT_SEED))
        unlabeled_cases = [c for c in train_cases if c not in labeled]
        train_cases = [c for c in train_cases if c in labeled]
    if len(train_cases) < N_FOLDS:
        raise BenchmarkError(
            f"{len(train_cases)} training cases: need at least {N_FOLDS} for the 5-fold split"
        )

    name = raw.name
    dataset_id = dataset_id_of(raw)
    target = settings.out / "nnUNet_raw" / name
    images: dict[str, Path] = {}
    for case in train_cases:
        for f in _image_files(raw / "imagesTr", case, file_ending, len(channels)):
            images[f.name] = f.resolve()
    sync_links(target / "imagesTr", images)
    sync_links(
        target / "labelsTr",
        {f"{c}{file_ending}": (raw / "labelsTr" / f"{c}{file_ending}").resolve() for c in train_cases},
    )
    unlabeled_images = {
        f.name: f.resolve()
        for case in unlabeled_cases
        for f in _image_files(raw / "imagesTr", case, file_ending, len(channels))
    }
    if unlabeled_images:
        sync_links(target / UNLABELED_IMAGES, unlabeled_images)
    elif (target / UNLABELED_IMAGES).is_dir():
        sync_links(target / UNLABELED_IMAGES, {})
        (target / UNLABELED_IMAGES).rmdir()
    new_meta = dict(meta, numTraining=len(train_cases))
    new_meta.pop("numTest", None)
    write_if_changed(target / "dataset.json", json.dumps(new_meta, indent=2))

    test_dir = settings.out / "test"
    test_images = {}
    for case in test_cases:
        for f in _image_files(test_images_src, case, file_ending, len(channels)):
            test_images[f.name] = f.resolve()
    sync_links(test_dir / "imagesTs", test_images)
    sync_links(
        test_dir / "labelsTs",
        {f"{c}{file_ending}": (test_labels_src / f"{c}{file_ending}").resolve() for c in test_cases},
    )
    write_if_changed(test_dir / "dataset.json", json.dumps(dict(meta, numTest=len(test_cases)), indent=2))
    return Data(
        dataset_name=name,
        dataset_id=dataset_id,
        raw=target,
        test_images=test_dir / "imagesTs",
        test_labels=test_dir / "labelsTs",
        file_ending=file_ending,
        labels=labels,
        train_cases=train_cases,
        test_cases=sorted(test_cases),
        test_source=source,
        channels=channels,
        unlabeled_cases=unlabeled_cases,
    )


def write_if_changed(path: Path, text: str) -> None:
    """Write only on a change, so the files' times (which resume checks rely on) stay put."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


# ----------------------------------------------------------------------------------------------------
# manifest (what makes the trainers of one output folder comparable)
# ----------------------------------------------------------------------------------------------------
def make_manifest(settings: Settings, data: Data, split: list[dict]) -> dict:
    override = json.loads(settings.plans_override.read_text()) if settings.plans_override else None
    return {
        "dataset": data.dataset_name,
        "configuration": CONFIGURATION,
        "plans_identifier": settings.plans_identifier,
        "plans_override": override,
        "plans_override_file": str(settings.plans_override) if settings.plans_override else None,
        "budget": settings.budget,
        "fold": settings.fold,
        "seed": settings.seed,
        "warm_start": settings.warm_start,
        "tta": settings.tta,
        "train_cases": data.train_cases,
        "test_cases": data.test_cases,
        "test_source": data.test_source,
        "split": split,
        "unlabeled_cases": data.unlabeled_cases,
        "raw": str(settings.raw),
        "preset": settings.preset,
    }


def check_manifest(out: Path, manifest: dict) -> None:
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in COMPARABLE_KEYS if old.get(k) != manifest.get(k)]
        if changed:
            details = "; ".join(
                f"{k}: was {_short(old.get(k))}, now {_short(manifest.get(k))}" for k in changed
            )
            raise BenchmarkError(
                f"{out} holds a benchmark with other settings ({details}). Trainers trained under different "
                "settings are not comparable: use a new --out (or delete this one)."
            )
    write_if_changed(path, json.dumps(manifest, indent=2))


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def make_split(train_cases: list[str]) -> list[dict[str, list[str]]]:
    """nnU-Net's default 5-fold split of the training cases (what nnU-Net would write itself)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    return [
        {"train": sorted(map(str, s["train"])), "val": sorted(map(str, s["val"]))}
        for s in generate_crossval_split(sorted(train_cases), seed=SPLIT_SEED, n_splits=N_FOLDS)
    ]


def write_split(preprocessed: Path, split: list[dict]) -> Path:
    path = preprocessed / "splits_final.json"
    write_if_changed(path, json.dumps(split, indent=4))
    return path
