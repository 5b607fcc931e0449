"""Evaluate prediction files against reference files: per case, per folder, and write summaries.

The summary has the shape of nnU-Net's ``summary.json``::

    {"metric_per_case": [{"reference_file": ..., "prediction_file": ...,
                          "metrics": {"1": {"Dice": ..., "HD95": ..., "ASSD": ..., "NSD@1.0mm": ...,
                                            "NSD@2.0mm": ..., "n_ref": ..., "n_pred": ...}, ...}}, ...],
     "mean": {"1": {metric: mean over cases}, ...},
     "foreground_mean": {metric: mean over labels of "mean"},
     "references_without_prediction": [file names], "missing_predictions": "skip" | "error" | "empty"}

Label keys are strings (as in nnU-Net's JSON): ``"1"`` for a label, ``"(1, 2, 3)"`` for a region (the union
of those label values, as nnU-Net's evaluation scores region-based datasets, e.g. BraTS's whole tumour).
With an ignore label (nnU-Net's sparse annotation) the reference's ignore voxels are left out: both masks are
restricted to the known voxels before every metric, so Dice counts known voxels only (as nnU-Net's
``compute_metrics``) and the surfaces are those of the known part (a structure cut by unknown voxels is cut
the same way in both masks, so the cut adds no distance). Metric definitions and the empty-mask conventions are
those of :mod:`nnunet_sdm.evaluation.surface`. Distances are in mm, from the reference image's spacing.
"""

from __future__ import annotations

import csv
import gzip
import json
import multiprocessing
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from nnunet_sdm.dataset_json import dataset_json_candidates, evaluated_labels, find_dataset_json
from nnunet_sdm.evaluation.challenge import challenge_metrics, get_scoring
from nnunet_sdm.evaluation.surface import image_diagonal_mm, nsd_key, surface_metrics

__all__ = [
    "SUMMARY_NAME",
    "evaluate_case",
    "evaluate_folders",
    "higher_is_better",
    "labels_from_dataset_json",
    "labels_from_masks",
    "metric_label",
    "metric_names",
    "resolve_labels",
    "write_summary",
]

#: the summary ``nnunet-sdm evaluate`` writes into a prediction folder (and ``compare`` reuses)
SUMMARY_NAME = "summary_surface.json"


def metric_names(tolerances: Sequence[float]) -> list[str]:
    """The metric keys of a summary evaluated with these NSD tolerances."""
    return ["Dice", "HD95", "ASSD", *[nsd_key(t) for t in tolerances]]


def higher_is_better(metric: str) -> bool:
    """Dice and NSD: higher is better; distances (HD95, ASSD): lower is better."""
    return metric == "Dice" or metric.startswith("NSD")


def metric_label(metric: str) -> str:
    """The metric's name with its unit and an arrow for the better direction (tables, figure titles)."""
    arrow = "↑" if higher_is_better(metric) else "↓"
    unit = " (mm)" if metric in ("HD95", "ASSD") else ""
    return f"{metric}{unit} {arrow}"


Label = int | tuple[int, ...]


def normalise_labels(labels: Iterable[int | Sequence[int]]) -> list[Label]:
    """Label values (ints) and regions (sequences of label values, scored as their union); a one-value
    region is that label, background (0) is left out, duplicates once."""
    out: list[Label] = []
    for value in labels:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or any(isinstance(v, bool) or not float(v).is_integer() for v in values):
            raise ValueError(f"labels must be integers or lists of integers (regions), got {value!r}")
        region = tuple(sorted({int(v) for v in values}))
        label = region[0] if len(region) == 1 else region
        if label != 0 and label not in out:
            out.append(label)
    if not out:
        raise ValueError(f"no foreground label to evaluate in {list(labels)} (0 is background)")
    return out


def label_key(label: Label) -> str:
    """The summary key of a label or region, as nnU-Net's ``label_or_region_to_key``: ``"1"``, ``"(1, 2)"``."""
    return str(label)


def _members(label: Label) -> tuple[int, ...]:
    return label if isinstance(label, tuple) else (label,)


def _mask(array: np.ndarray, label: Label) -> np.ndarray:
    return np.isin(array, label) if isinstance(label, tuple) else array == label


def labels_from_dataset_json(
    dataset_json: str | Path | None = None, gt_dir: str | Path | None = None
) -> list[int]:
    """Foreground label values from an nnU-Net ``dataset.json`` (background and ``ignore`` left out).

    Without ``dataset_json`` it looks for ``dataset.json`` in ``gt_dir`` and its parent (``labelsTs``
    sits next to ``dataset.json`` in a raw dataset).
    """
    if dataset_json is None:
        if gt_dir is None:
            raise ValueError("give dataset_json or gt_dir (or explicit labels)")
        dataset_json = find_dataset_json(gt_dir)
        if dataset_json is None:
            candidates = [str(c) for c in dataset_json_candidates(gt_dir)]
            raise FileNotFoundError(
                f"no dataset.json found at {candidates}: pass the labels or the dataset.json path"
            )
    return normalise_labels(evaluated_labels(dataset_json))


def labels_from_masks(gt_dir: str | Path, file_ending: str = ".nii.gz") -> list[int]:
    """The foreground label values found in the reference masks of ``gt_dir`` (every ``*file_ending``)."""
    gt_dir = Path(gt_dir)
    files = sorted(p for p in gt_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not files:
        raise FileNotFoundError(f"no *{file_ending} reference files in {gt_dir}")
    found: set[int] = set()
    for path in files:
        values = _label_values(_read(path)[0])
        bad = [v for v in values if not float(v).is_integer() or v < 0]
        if bad:
            raise ValueError(f"{path}: label values must be integers >= 0, found {sorted(bad)[:5]}")
        found.update(int(v) for v in values)
    found.discard(0)
    if not found:
        raise ValueError(f"the reference masks in {gt_dir} hold no foreground label: pass --labels")
    return sorted(found)


def resolve_labels(
    labels: Sequence[int] | None,
    dataset_json: str | Path | None,
    gt_dir: str | Path,
    file_ending: str = ".nii.gz",
) -> tuple[list[int], str]:
    """The labels to evaluate and where they came from: ``labels`` if given, else the ``dataset.json``
    (given, or found beside ``gt_dir``), else the values in the reference masks."""
    if labels:
        return normalise_labels(labels), "--labels"
    found = dataset_json or find_dataset_json(gt_dir)
    if found is not None:
        return labels_from_dataset_json(found), str(found)
    return labels_from_masks(
        gt_dir, file_ending
    ), f"the reference masks in {gt_dir} (no --labels, no dataset.json)"


def _label_values(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) and array.size and 0 <= array.min() and array.max() < 1 << 16:
        return np.flatnonzero(np.bincount(array.ravel()))
    return np.unique(array)


def _check_gzip_complete(path: Path) -> None:
    """SimpleITK reads a truncated ``.nii.gz`` without an error (missing voxels come back as 0): check the stream."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(
            f"{path}: truncated or corrupt gzip file ({type(e).__name__}: {e}); write it again"
        ) from None


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.name.endswith(".gz"):
        _check_gzip_complete(path)
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(float(s) for s in reversed(image.GetSpacing()))


def _bounding_boxes(
    segmentation: np.ndarray, labels: Sequence[Label]
) -> dict[Label, tuple[slice, ...] | None]:
    """Bounding box of every label (a region: of its labels' union) in one pass (``ndimage.find_objects``)."""
    if not np.issubdtype(segmentation.dtype, np.integer):
        segmentation = segmentation.astype(np.int32)
    objects = ndimage.find_objects(segmentation, max_label=max(max(_members(lb)) for lb in labels))
    boxes: dict[Label, tuple[slice, ...] | None] = {}
    for label in labels:
        box = None
        for member in _members(label):
            box = _union(box, objects[member - 1])
        boxes[label] = box
    return boxes


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def evaluate_case(
    gt_path: str | Path,
    pred_path: str | Path | None,
    labels: Iterable[int],
    tolerances: Sequence[float] = (1.0, 2.0),
    scoring: str | None = None,
    ignore_label: int | None = None,
) -> dict:
    """Dice, HD95, ASSD, NSD per label or region for one reference/prediction pair (nnU-Net
    ``metric_per_case`` entry); ``ignore_label``: the reference's unknown voxels, left out (module docstring).

    ``scoring`` (``flare22``, ``flare23``, ``flare24``): the challenge's rules instead
    (:mod:`nnunet_sdm.evaluation.challenge`): ``Dice`` and ``NSD`` at the organ's tolerance, rounded.

    Images are read with SimpleITK; the spacing is the reference header's, in numpy axis order. Both
    images must have the same shape and spacing, and contain only 0 and the given labels.
    ``pred_path=None`` scores a missing prediction as an empty one (``"prediction_file": None``).
    """
    gt_path = Path(gt_path)
    labels = normalise_labels(labels)
    gt, spacing = _read(gt_path)
    if pred_path is None:
        pred, pred_spacing = np.zeros_like(gt), spacing
    else:
        pred_path = Path(pred_path)
        pred, pred_spacing = _read(pred_path)
    if gt.shape != pred.shape:
        raise ValueError(
            f"shape mismatch: prediction {pred_path} is {pred.shape} but reference {gt_path} is {gt.shape} "
            "(numpy axis order)"
        )
    if not np.allclose(spacing, pred_spacing, rtol=1e-4, atol=1e-6):
        raise ValueError(
            f"spacing mismatch: prediction {pred_path} has {pred_spacing} but reference {gt_path} has {spacing} "
            "(mm, numpy axis order)"
        )
    allowed = {m for label in labels for m in _members(label)} | {0}
    for role, path, array in (("reference", gt_path, gt), ("prediction", pred_path, pred)):
        unexpected = sorted(float(v) if not float(v).is_integer() else int(v) for v in _label_values(array))
        also = {ignore_label} if ignore_label is not None and role == "reference" else set()
        unexpected = [v for v in unexpected if v not in allowed | also]
        if unexpected:
            raise ValueError(
                f"case {(pred_path or gt_path).name}: the {role} {path} contains label values {unexpected} that are neither "
                f"background (0) nor among the evaluated labels {labels}"
            )

    prediction_file = None if pred_path is None else str(pred_path)
    if scoring is not None:
        if ignore_label is not None or any(isinstance(label, tuple) for label in labels):
            raise ValueError(f"scoring {scoring!r} scores label maps of organs: no regions, no ignore label")
        rules = get_scoring(scoring)
        metrics = {str(label): challenge_metrics(gt, pred, spacing, label, rules) for label in labels}
        return {"reference_file": str(gt_path), "prediction_file": prediction_file, "metrics": metrics}
    known = None if ignore_label is None else gt != ignore_label
    gt_boxes, pred_boxes = _bounding_boxes(gt, labels), _bounding_boxes(pred, labels)
    diagonal = image_diagonal_mm(gt.shape, spacing)
    metrics: dict[str, dict] = {}
    for label in labels:
        box = _union(gt_boxes[label], pred_boxes[label])
        if box is None:
            mask_gt = mask_pred = np.zeros((1,) * gt.ndim, dtype=bool)
        else:
            mask_gt, mask_pred = _mask(gt[box], label), _mask(pred[box], label)
            if known is not None:
                mask_pred &= known[box]
        values = surface_metrics(mask_gt, mask_pred, spacing, tolerances, empty_distance=diagonal)
        values["n_ref"] = int(np.count_nonzero(mask_gt))
        values["n_pred"] = int(np.count_nonzero(mask_pred))
        metrics[label_key(label)] = values
    return {"reference_file": str(gt_path), "prediction_file": prediction_file, "metrics": metrics}


def _evaluate_job(job: tuple) -> dict:
    return evaluate_case(*job)


def _summarise(per_case: list[dict], labels: Sequence[Label]) -> dict:
    keys = [label_key(label) for label in labels]
    names = list(per_case[0]["metrics"][keys[0]].keys())
    mean = {
        key: {m: float(np.nanmean([case["metrics"][key][m] for case in per_case])) for m in names}
        for key in keys
    }
    foreground_mean = {m: float(np.mean([mean[key][m] for key in keys])) for m in names}
    return {"metric_per_case": per_case, "mean": mean, "foreground_mean": foreground_mean}


MISSING_PREDICTIONS = ("skip", "error", "empty")


def evaluate_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    labels: Iterable[int],
    tolerances: Sequence[float] = (1.0, 2.0),
    num_workers: int = 2,
    file_ending: str = ".nii.gz",
    progress: bool = True,
    missing_predictions: str = "skip",
    scoring: str | None = None,
    ignore_label: int | None = None,
) -> dict:
    """Evaluate every ``*file_ending`` file of ``pred_dir`` against the file of the same name in ``gt_dir``.

    Returns the nnU-Net-shaped summary described in the module docstring; cases are sorted by name.
    ``num_workers <= 1`` evaluates in this process, otherwise in a spawn-started process pool.

    References without a prediction are listed in ``references_without_prediction`` and, by
    ``missing_predictions``, left out of the cases (``"skip"``, as nnU-Net's own evaluation does), an error
    (``"error"``), or scored as empty predictions (``"empty"``: Dice 0 and HD95 = the image diagonal, as a
    challenge scores a case without a submission). ``scoring``: a challenge's rules, see :func:`evaluate_case`.
    """
    if missing_predictions not in MISSING_PREDICTIONS:
        raise ValueError(
            f"missing_predictions must be one of {MISSING_PREDICTIONS}, got {missing_predictions!r}"
        )
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    labels = normalise_labels(labels)
    if scoring is not None:
        get_scoring(scoring)  # an unknown name stops before any work
    for role, folder in (("reference", gt_dir), ("prediction", pred_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{role} folder does not exist: {folder}")
    files = sorted(p.name for p in pred_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not files:
        raise FileNotFoundError(f"no *{file_ending} prediction files in {pred_dir}")
    missing = [name for name in files if not (gt_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} prediction(s) in {pred_dir} have no reference in {gt_dir}: {missing}"
        )

    unpredicted = sorted(
        p.name
        for p in gt_dir.iterdir()
        if p.is_file() and p.name.endswith(file_ending) and p.name not in files
    )
    if unpredicted and missing_predictions == "error":
        raise FileNotFoundError(
            f"{len(unpredicted)} reference(s) in {gt_dir} have no prediction in {pred_dir}: {unpredicted}"
        )
    scored_empty = unpredicted if missing_predictions == "empty" else []
    jobs = [
        (gt_dir / name, pred_dir / name, labels, tuple(tolerances), scoring, ignore_label) for name in files
    ]
    jobs += [(gt_dir / name, None, labels, tuple(tolerances), scoring, ignore_label) for name in scored_empty]
    jobs.sort(key=lambda job: job[0].name)
    bar = {"total": len(jobs), "desc": "evaluating", "unit": "case", "disable": not progress}
    if num_workers <= 1 or len(jobs) == 1:
        per_case = [_evaluate_job(job) for job in tqdm(jobs, **bar)]
    else:
        with multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs))) as pool:
            per_case = list(tqdm(pool.imap(_evaluate_job, jobs), **bar))
    summary = _summarise(per_case, labels)
    summary["references_without_prediction"] = unpredicted
    summary["missing_predictions"] = missing_predictions
    summary["scoring"] = scoring or "standard"
    summary["ignore_label"] = ignore_label
    return summary


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _case_name(path: str) -> str:
    return re.sub(r"(\.nii\.gz|\.[^./]+)$", "", Path(path).name)


def write_summary(summary: dict, json_path: str | Path, csv_path: str | Path | None = None) -> None:
    """Write ``summary`` as JSON (sorted keys, like nnU-Net) and optionally as CSV.

    The CSV has one row per case and label: ``case, label, reference_file, prediction_file`` and the
    metrics (``Dice, HD95, ASSD, NSD@...mm, n_ref, n_pred``).
    """
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_plain(summary), indent=2, sort_keys=True))
    if csv_path is None:
        return
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in summary["metric_per_case"]:
        for label, values in case["metrics"].items():
            rows.append(
                {
                    "case": _case_name(case["reference_file"]),
                    "label": str(label),
                    "reference_file": case["reference_file"],
                    "prediction_file": case["prediction_file"] or "",
                    **_plain(values),
                }
            )
    fields = ["case", "label", "reference_file", "prediction_file"]
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
