"""A small synthetic nnU-Net v2 raw dataset with slice-wise annotation jitter.

Each case is a 3D volume (numpy axis 0 = z, the coarse slice axis) that contains

* ``organ`` (label 1): a blob -- an in-plane rotated ellipsoid whose implicit function carries a smooth,
  low-frequency random deformation; its position, size and orientation vary per case;
* ``vessel`` (label 2): a thin curved tube that runs through every slice (radius 2.5-3.0 mm, i.e. about
  6-7 voxels across at 0.8 mm in-plane spacing), next to or through the organ; where the two overlap
  the vessel wins. (At radius 1.3-1.7 mm the one-voxel slice jitter of the labels is half the vessel's
  width, and stock nnU-Net learned it after 200 iterations in one run and not within 600 in another.)

The image is a piecewise-constant class image (background 100, organ 180, vessel 360), blurred a
little (partial volume), with a small smooth texture in the organ, a smooth multiplicative bias field
and Gaussian noise (sd 12): both classes are clearly visible, so a tiny nnU-Net learns them within
minutes of CPU training.

Training labels imitate slice-by-slice manual annotation (Xue et al., AAAI 2020, Fig. 1): every axis-0
slice of every class is, with probability ``jitter_prob``, independently shifted by one voxel, dilated or
eroded (an erosion never deletes a structure from a slice), so the 3D label is not smooth across slices. ``labelsTs`` holds the clean (unjittered) truth of the test cases, for evaluation;
``jitter_test_labels=True`` jitters those too.

Two more kinds of nnU-Net dataset (``regions=True`` / ``ignore_label=True``, combinable):

* **region-based** (BraTS-like): one nested tumour per case, a deformed blob (label 1, edema) around a core
  whose outer rim enhances (label 3) around a necrotic centre (label 2); ``dataset.json`` declares nnU-Net's
  regions "whole tumour" (1, 2, 3), "tumour core" (2, 3) and "enhancing tumour" (3) with
  ``regions_class_order`` [1, 2, 3], as nnU-Net's BraTS conversion does;
* **sparse annotation** (nnU-Net's ignore label): the training labels of only every ``labelled_every``-th
  axis-0 slice (from a random offset per case) are kept; every other voxel gets the ``ignore`` label
  (the largest label + 1). The test labels stay complete.

Everything is drawn from ``numpy.random.default_rng([seed, case_index])``: the same arguments give the
same bytes, and case ``i`` does not depend on how many cases are written.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_sdm.unlabeled import UNLABELED_IMAGES

LABELS = {"background": 0, "organ": 1, "vessel": 2}
INTENSITIES = {0: 100.0, 1: 180.0, 2: 360.0}
#: the region-based dataset: raw labels and nnU-Net's (nested) regions
TUMOUR_LABELS = {"background": 0, "edema": 1, "necrosis": 2, "enhancing": 3}
TUMOUR_INTENSITIES = {0: 100.0, 1: 190.0, 2: 130.0, 3: 330.0}
TUMOUR_REGIONS = {"whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": 3}
NOISE_SD = 12.0
FILE_ENDING = ".nii.gz"
_MARKER = "nnunet_sdm synthetic dataset"

_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass
class SyntheticCase:
    """One synthetic case: ``image`` (float32), ``label`` (clean truth) and ``jittered`` (uint8)."""

    image: np.ndarray
    label: np.ndarray
    jittered: np.ndarray


def _grid_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm, one broadcastable array per axis."""
    axes = []
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        view = [1, 1, 1]
        view[axis] = n
        axes.append(((np.arange(n, dtype=np.float64) + 0.5) * s).reshape(view))
    return axes


def _smooth_field(
    rng: np.random.Generator, coords: list[np.ndarray], wavelength_mm: tuple[float, float], terms: int = 4
) -> np.ndarray:
    """Sum of ``terms`` random plane waves with wavelengths in ``wavelength_mm``, scaled to max |f| <= 1."""
    field = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)))
    for _ in range(terms):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelength_mm)
        phase = rng.uniform(0, 2 * np.pi)
        field += rng.uniform(0.5, 1.0) * np.sin(k * sum(d * c for d, c in zip(direction, coords)) + phase)
    return field / terms


def _organ_mask(
    rng: np.random.Generator, coords: list[np.ndarray], extent: np.ndarray
) -> tuple[np.ndarray, dict]:
    centre = extent * rng.uniform(0.4, 0.6, size=3)
    semi_axes = np.array(
        [
            extent[0] * rng.uniform(0.2, 0.28),
            extent[1] * rng.uniform(0.17, 0.25),
            extent[2] * rng.uniform(0.17, 0.25),
        ]
    )
    angle = rng.uniform(0, np.pi)
    dz, dy, dx = (c - m for c, m in zip(coords, centre))
    u = np.cos(angle) * dy + np.sin(angle) * dx
    v = -np.sin(angle) * dy + np.cos(angle) * dx
    implicit = (dz / semi_axes[0]) ** 2 + (u / semi_axes[1]) ** 2 + (v / semi_axes[2]) ** 2
    deformation = _smooth_field(rng, coords, (1.5 * semi_axes.max(), 3.0 * semi_axes.max()))
    return implicit + deformation < 1.0, {"centre": centre, "semi_axes": semi_axes}


def _vessel_mask(
    rng: np.random.Generator, coords: list[np.ndarray], extent: np.ndarray, organ: dict
) -> np.ndarray:
    z = coords[0][:, 0, 0]
    direction = rng.uniform(0, 2 * np.pi)
    offset = organ["semi_axes"][1:].max() + rng.uniform(2.0, 6.0)
    base = organ["centre"][1:] + offset * np.array([np.cos(direction), np.sin(direction)])
    base = np.clip(base, 6.0, extent[1:] - 6.0)
    amplitude = rng.uniform(2.0, 5.0, size=2)
    period = extent[0] * rng.uniform(0.8, 1.6, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    centre_y = base[0] + amplitude[0] * np.sin(2 * np.pi * z / period[0] + phase[0])
    centre_x = base[1] + amplitude[1] * np.sin(2 * np.pi * z / period[1] + phase[1])
    centre_y = np.clip(centre_y, 3.0, extent[1] - 3.0)[:, None, None]
    centre_x = np.clip(centre_x, 3.0, extent[2] - 3.0)[:, None, None]
    radius = rng.uniform(2.5, 3.0)
    return (coords[1] - centre_y) ** 2 + (coords[2] - centre_x) ** 2 <= radius**2


def _jitter_slice(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One annotator's slip on one 2D slice: shift by one voxel, dilate or erode (3x3 cross).

    An erosion that would delete the structure from the slice leaves the slice unchanged.
    """
    operation = ("shift", "dilate", "erode")[rng.integers(3)]
    if operation == "dilate":
        return ndimage.binary_dilation(mask, _CROSS)
    if operation == "erode":
        eroded = ndimage.binary_erosion(mask, _CROSS)
        return eroded if eroded.any() else mask
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    dy, dx = shifts[rng.integers(len(shifts))]
    shifted = np.zeros_like(mask)
    ny, nx = mask.shape
    shifted[max(dy, 0) : ny + min(dy, 0), max(dx, 0) : nx + min(dx, 0)] = mask[
        max(-dy, 0) : ny + min(-dy, 0), max(-dx, 0) : nx + min(-dx, 0)
    ]
    return shifted


def jitter_labels(label: np.ndarray, rng: np.random.Generator, prob: float = 0.7) -> np.ndarray:
    """Slice-wise annotation jitter of a 3D label map (axis 0 = slices), as in Xue et al., Fig. 1.

    Each class of each axis-0 slice is, independently with probability ``prob``, shifted by one voxel,
    dilated or eroded (never to nothing); higher labels are painted over lower ones.
    """
    out = np.zeros_like(label)
    for value in sorted(v for v in np.unique(label) if v != 0):
        for z in range(label.shape[0]):
            mask = label[z] == value
            if mask.any() and rng.random() < prob:
                mask = _jitter_slice(mask, rng)
            out[z][mask] = value
    return out


def synthesize_case(
    index: int,
    *,
    shape: Sequence[int] = (24, 64, 64),
    spacing: Sequence[float] = (2.5, 0.8, 0.8),
    seed: int = 0,
    jitter_prob: float = 0.7,
) -> SyntheticCase:
    """Draw case ``index`` of the synthetic dataset (arrays in numpy axis order, axis 0 = z).

    Deterministic in ``(seed, index, shape, spacing, jitter_prob)``.
    """
    rng = np.random.default_rng([seed, index])
    spacing_arr, extent, coords = _case_grid(shape, spacing)

    organ, organ_params = _organ_mask(rng, coords, extent)
    vessel = _vessel_mask(rng, coords, extent, organ_params)
    label = np.zeros(tuple(shape), dtype=np.uint8)
    label[organ] = LABELS["organ"]
    label[vessel] = LABELS["vessel"]

    lut = np.array([INTENSITIES[i] for i in range(3)])
    image = lut[label]
    image[label == LABELS["organ"]] *= 1.0 + 0.05 * _smooth_field(rng, coords, (8.0, 16.0))[label == 1]
    image = _blur_bias_noise(image, rng, coords, spacing_arr, extent)
    jittered = jitter_labels(label, rng, jitter_prob)
    return SyntheticCase(image.astype(np.float32), label, jittered)


def _case_grid(
    shape: Sequence[int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Checked spacing (array), extent (mm) and voxel-centre coordinates of a synthetic case."""
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must have 3 entries (z, y, x), got {shape} and {spacing}")
    if min(shape) < 8 or min(spacing) <= 0:
        raise ValueError(
            f"shape must be at least 8 voxels per axis and spacing positive, got {shape}, {spacing}"
        )
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    return spacing_arr, np.asarray(shape) * spacing_arr, _grid_mm(shape, spacing_arr)


def _blur_bias_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    coords: list[np.ndarray],
    spacing: np.ndarray,
    extent: np.ndarray,
) -> np.ndarray:
    """Partial volume (~0.5 voxel blur in-plane, less across slices), a smooth bias field and noise."""
    image = ndimage.gaussian_filter(image, 0.5 * spacing.min() / spacing)
    bias = 1.0 + 0.15 * _smooth_field(rng, coords, (1.5 * extent.max(), 3.0 * extent.max()), terms=3)
    return image * bias + rng.normal(0.0, NOISE_SD, size=image.shape)


def synthesize_tumour_case(
    index: int,
    *,
    shape: Sequence[int] = (24, 64, 64),
    spacing: Sequence[float] = (2.5, 0.8, 0.8),
    seed: int = 0,
    jitter_prob: float = 0.7,
) -> SyntheticCase:
    """Case ``index`` of the region-based dataset: a nested tumour (labels of ``TUMOUR_LABELS``).

    The whole tumour is a deformed ellipsoid; the core is the part deeper than 2-3.5 mm (plus a smooth
    wobble) inside it, the necrosis the part 2-3 mm deeper still, so enhancing (3) is a rim between edema
    (1) and necrosis (2). Deterministic in its arguments, like :func:`synthesize_case`.
    """
    rng = np.random.default_rng([seed, index, 1])
    spacing_arr, extent, coords = _case_grid(shape, spacing)
    whole, _ = _organ_mask(rng, coords, extent)
    depth = ndimage.distance_transform_edt(whole, sampling=spacing_arr)
    wobble = 1.0 * _smooth_field(rng, coords, (10.0, 25.0))
    core_depth = rng.uniform(2.0, 3.5)
    core = whole & (depth + wobble > core_depth)
    necrosis = core & (depth + wobble > core_depth + rng.uniform(2.0, 3.0))
    label = np.zeros(tuple(shape), dtype=np.uint8)
    label[whole] = TUMOUR_LABELS["edema"]
    label[core] = TUMOUR_LABELS["enhancing"]
    label[necrosis] = TUMOUR_LABELS["necrosis"]
    lut = np.array([TUMOUR_INTENSITIES[i] for i in range(4)])
    image = _blur_bias_noise(lut[label], rng, coords, spacing_arr, extent)
    return SyntheticCase(image.astype(np.float32), label, jitter_labels(label, rng, jitter_prob))


def sparse_annotation(
    label: np.ndarray, ignore_value: int, labelled_every: int, rng: np.random.Generator
) -> np.ndarray:
    """``label`` with every axis-0 slice but every ``labelled_every``-th (from a random offset) set to
    ``ignore_value``: slice-wise sparse annotation for nnU-Net's ignore label."""
    out = np.full_like(label, ignore_value)
    offset = int(rng.integers(labelled_every))
    out[offset::labelled_every] = label[offset::labelled_every]
    return out


def _write(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing)])  # SimpleITK: x, y, z
    sitk.WriteImage(image, str(path), useCompression=True)


def _prepare_folder(out_dir: Path, folder_name: str, dataset_id: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    clashes = [p.name for p in out_dir.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder_name]
    if clashes:
        raise FileExistsError(
            f"{out_dir} already holds {clashes} with dataset id {dataset_id}; nnU-Net needs unique ids: "
            "choose another dataset_id or remove them"
        )
    folder = out_dir / folder_name
    if folder.exists():
        dataset_json = folder / "dataset.json"
        ours = dataset_json.is_file() and _MARKER in json.loads(dataset_json.read_text()).get(
            "description", ""
        )
        if not ours:
            raise FileExistsError(
                f"{folder} exists and is not a dataset written by nnunet_sdm.synth; not touching it"
            )
        shutil.rmtree(folder)
    return folder


def _finish_dataset(
    folder: Path,
    dataset_json: dict,
    dataset_id: int,
    name: str,
    train_cases: list[str],
    test_cases: list[str],
    spacing: Sequence[float],
    shape: Sequence[int],
) -> dict:
    """Write ``dataset.json`` and return the description that the ``make_*_dataset`` functions return."""
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return {
        "folder": str(folder),
        "dataset_id": dataset_id,
        "dataset_name": folder.name,
        "name": name,
        "train_cases": train_cases,
        "test_cases": test_cases,
        "labels": dict(dataset_json["labels"]),
        "spacing": tuple(float(s) for s in spacing),
        "shape": tuple(int(n) for n in shape),
    }


def make_synthetic_dataset(
    out_dir: str | Path,
    *,
    dataset_id: int = 990,
    name: str = "SDMSynth",
    num_training: int = 12,
    num_test: int = 4,
    shape: Sequence[int] = (24, 64, 64),
    spacing: Sequence[float] = (2.5, 0.8, 0.8),
    seed: int = 0,
    jitter_prob: float = 0.7,
    jitter_test_labels: bool = False,
    regions: bool = False,
    ignore_label: bool = False,
    labelled_every: int = 3,
    num_unlabeled: int = 0,
) -> dict:
    """Write ``out_dir/DatasetXXX_Name`` as an nnU-Net v2 raw dataset (see the module docstring).

    Layout: ``imagesTr/{name}_{i:03d}_0000.nii.gz``, ``labelsTr/{name}_{i:03d}.nii.gz`` (jittered),
    ``imagesTs`` and ``labelsTs`` (clean truth unless ``jitter_test_labels``) for cases
    ``num_training .. num_training + num_test - 1``, and ``dataset.json``. ``shape`` and ``spacing`` are in
    numpy axis order (z, y, x); the headers carry the spacing in SimpleITK's (x, y, z) order. A dataset
    previously written here by this function is replaced; any other existing folder is left alone
    (FileExistsError).

    Returns a dict with ``folder`` (str), ``dataset_id``, ``dataset_name`` (``DatasetXXX_Name``),
    ``name``, ``train_cases`` and ``test_cases`` (case identifiers), ``labels``, ``spacing``, ``shape``.

    ``regions``: the BraTS-like nested-region dataset instead (module docstring); ``ignore_label``: the
    training labels annotated on every ``labelled_every``-th slice only, the rest nnU-Net's ignore label.
    ``num_unlabeled``: that many more cases as images only, in ``imagesUnlabeled`` (semi-supervised
    training, :mod:`nnunet_sdm.unlabeled`); returned as ``unlabeled_cases``.
    """
    if not 0 < dataset_id < 1000:
        raise ValueError(f"dataset_id must be in 1..999 for nnU-Net, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9]+", name):
        raise ValueError(
            f"name must be alphanumeric (it becomes Dataset{dataset_id:03d}_<name>), got {name!r}"
        )
    if isinstance(labelled_every, bool) or not isinstance(labelled_every, int) or labelled_every < 1:
        raise ValueError(f"labelled_every must be an integer >= 1, got {labelled_every!r}")
    if num_training < 1 or num_test < 0 or num_unlabeled < 0:
        raise ValueError(
            f"need num_training >= 1, num_test >= 0 and num_unlabeled >= 0, got {num_training}, {num_test} "
            f"and {num_unlabeled}"
        )
    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    folder = _prepare_folder(Path(out_dir), dataset_name, dataset_id)
    subfolders = {key: folder / key for key in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for sub in subfolders.values():
        sub.mkdir(parents=True)

    synthesize = synthesize_tumour_case if regions else synthesize_case
    labels = dict(TUMOUR_LABELS if regions else LABELS)
    ignore_value = max(labels.values()) + 1
    train_cases, test_cases = [], []
    for index in range(num_training + num_test):
        case = synthesize(index, shape=shape, spacing=spacing, seed=seed, jitter_prob=jitter_prob)
        case_id = f"{name}_{index:03d}"
        training = index < num_training
        split = "Tr" if training else "Ts"
        label = case.jittered if training or jitter_test_labels else case.label
        if ignore_label and training:
            label = sparse_annotation(
                label, ignore_value, labelled_every, np.random.default_rng([seed, index, 2])
            )
        _write(case.image, spacing, subfolders[f"images{split}"] / f"{case_id}_0000{FILE_ENDING}")
        _write(label, spacing, subfolders[f"labels{split}"] / f"{case_id}{FILE_ENDING}")
        (train_cases if training else test_cases).append(case_id)

    unlabeled_cases = []
    if num_unlabeled:
        (folder / UNLABELED_IMAGES).mkdir()
    for index in range(num_training + num_test, num_training + num_test + num_unlabeled):
        case = synthesize(index, shape=shape, spacing=spacing, seed=seed, jitter_prob=jitter_prob)
        case_id = f"{name}_{index:03d}"
        _write(case.image, spacing, folder / UNLABELED_IMAGES / f"{case_id}_0000{FILE_ENDING}")
        unlabeled_cases.append(case_id)

    content = "nested tumour regions" if regions else "blob organ + thin vessel"
    sparse = (
        f", annotated on every {labelled_every}th slice (ignore label {ignore_value})" if ignore_label else ""
    )
    dataset_json = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, **TUMOUR_REGIONS} if regions else labels,
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        "name": dataset_name,
        "description": f"{_MARKER}: {content}, slice-wise jittered training labels{sparse} "
        f"(seed {seed}, shape {list(shape)}, spacing {list(spacing)} in z, y, x)",
        "numTest": num_test,
        "labelsTs": "clean truth" if not jitter_test_labels else "jittered like labelsTr",
    }
    if regions:
        dataset_json["regions_class_order"] = [1, 2, 3]
    if ignore_label:
        dataset_json["labels"]["ignore"] = ignore_value
    info = _finish_dataset(folder, dataset_json, dataset_id, name, train_cases, test_cases, spacing, shape)
    return {**info, "unlabeled_cases": unlabeled_cases}


def list_case_ids(
    folder: str | Path, file_ending: str = FILE_ENDING, channel_suffix: bool | None = None
) -> list[str]:
    """Sorted nnU-Net case identifiers of the files in ``folder``.

    Image folders name files ``{case}_{XXXX}{file_ending}`` (channel suffix), label and prediction folders
    ``{case}{file_ending}``. ``channel_suffix=None`` decides from the folder name (``images*`` -> True,
    anything else -> False).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    if channel_suffix is None:
        channel_suffix = folder.name.startswith("images")
    ids = set()
    for path in folder.iterdir():
        if not path.name.endswith(file_ending) or not path.is_file():
            continue
        stem = path.name[: -len(file_ending)]
        if channel_suffix:
            if not re.search(r"_\d{4}$", stem):
                raise ValueError(f"{path}: expected an image file named <case>_XXXX{file_ending}")
            stem = stem[:-5]
        ids.add(stem)
    return sorted(ids)


# ---- many classes: an abdomen-like multi-organ dataset (FLARE-sized class counts) -----------------------------
def multi_organ_labels(
    shape: Sequence[int], spacing: Sequence[float], num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """A label map with ``num_classes`` organs (labels 1..K) inside a body ellipse, as in an abdominal CT.

    Organ ``c`` is a deformed ellipsoid (``_organ_mask``) of a size that falls with ``c`` (a liver-sized
    first organ down to small glands), placed at random inside the body; every fifth class from the
    third on is a thin tube through all slices (vessel-like: aorta, IVC). Later classes win where organs
    overlap, so a small organ is never hidden by a large one. uint8 (K <= 255).
    """
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in 1..255, got {num_classes}")
    coords = _grid_mm(shape, spacing)
    extent = np.array([n * s for n, s in zip(shape, spacing)])
    centre = extent / 2
    body = sum(((c - m) / (0.48 * e)) ** 2 for c, m, e in zip(coords[1:], centre[1:], extent[1:])) <= 1
    labels = np.zeros(shape, dtype=np.uint8)
    for c in range(1, num_classes + 1):
        if c % 5 == 3:  # a tube through every slice, wobbling in-plane
            radius = rng.uniform(2.5, 4.0)
            base = rng.uniform(centre[1:] - 0.25 * extent[1:], centre[1:] + 0.25 * extent[1:])
            wobble = rng.uniform(2.0, 6.0) * np.sin(2 * np.pi * coords[0] / extent[0] + rng.uniform(0, 6.3))
            mask = (coords[1] - base[0] - wobble) ** 2 + (coords[2] - base[1]) ** 2 <= radius**2
        else:  # a deformed ellipsoid, smaller for later classes (liver-sized down to glands)
            semi_axes = extent * (0.28 / (1 + 0.25 * (c - 1))) * rng.uniform(0.8, 1.2, size=3)
            position = rng.uniform(centre - 0.3 * extent, centre + 0.3 * extent)
            implicit = sum(((x - m) / r) ** 2 for x, m, r in zip(coords, position, semi_axes))
            wavelengths = (1.5 * semi_axes.max(), 3.0 * semi_axes.max())
            mask = implicit + 0.5 * _smooth_field(rng, coords, wavelengths) < 1.0
        labels[mask & body] = c
    return labels


def make_multi_organ_dataset(
    out_dir: str | Path,
    *,
    dataset_id: int = 991,
    name: str = "SDMOrgans",
    num_classes: int = 13,
    num_training: int = 4,
    shape: Sequence[int] = (96, 240, 200),
    spacing: Sequence[float] = (1.5, 0.8, 0.8),
    seed: int = 0,
) -> dict:
    """Write ``out_dir/DatasetXXX_Name``: ``num_training`` cases of :func:`multi_organ_labels` with an image
    (class intensities 100 + 20 c, blurred, bias field, noise), no test cases. For benchmarks at nnU-Net's
    scale (13 classes as FLARE); returns the same keys as :func:`make_synthetic_dataset`."""
    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    folder = _prepare_folder(Path(out_dir), dataset_name, dataset_id)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    cases = []
    for index in range(num_training):
        rng = np.random.default_rng([seed, index])
        label = multi_organ_labels(shape, spacing, num_classes, rng)
        image = ndimage.gaussian_filter(100.0 + 20.0 * label.astype(np.float32), sigma=0.7)
        image *= 1.0 + 0.1 * _smooth_field(rng, _grid_mm(shape, spacing), (100.0, 200.0))
        image += rng.normal(0.0, NOISE_SD, size=shape)
        case_id = f"{name}_{index:03d}"
        _write(image.astype(np.float32), spacing, folder / "imagesTr" / f"{case_id}_0000{FILE_ENDING}")
        _write(label, spacing, folder / "labelsTr" / f"{case_id}{FILE_ENDING}")
        cases.append(case_id)
    labels = {"background": 0, **{f"organ{c}": c for c in range(1, num_classes + 1)}}
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        "name": dataset_name,
        "description": f"{_MARKER}: {num_classes} organs (seed {seed}, shape {list(shape)}, "
        f"spacing {list(spacing)} in z, y, x)",
    }
    return _finish_dataset(folder, dataset_json, dataset_id, name, cases, [], spacing, shape)
