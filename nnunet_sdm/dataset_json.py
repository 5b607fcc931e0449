"""nnU-Net's ``dataset.json``: its foreground labels, read in one place.

Used by evaluation (which labels to score, their names), comparisons, the FLARE submission tools, the SDM
export and the accuracy benchmark. Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "RegionLabelsError",
    "dataset_json_candidates",
    "find_dataset_json",
    "evaluated_label_names",
    "evaluated_labels",
    "foreground_labels",
    "ignore_label",
    "read_dataset_json",
]


class RegionLabelsError(ValueError):
    """The dataset is region-based (a label maps to a list of values): no single label value per class."""


def read_dataset_json(source: dict | str | Path) -> tuple[dict, str]:
    """The content of a ``dataset.json`` (a dict passes through) and a name for messages."""
    if isinstance(source, dict):
        return source, "dataset.json"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset.json")
    try:
        return json.loads(path.read_text()), str(path)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def foreground_labels(source: dict | str | Path) -> dict[int, str]:
    """Foreground label value -> name, in increasing value order; ``background`` (0) and ``ignore`` are left
    out. Raises :class:`RegionLabelsError` naming the file for region-based datasets."""
    content, where = read_dataset_json(source)
    if "labels" not in content:
        raise ValueError(f"{where} has no 'labels' entry")
    labels: dict[int, str] = {}
    for name, value in content["labels"].items():
        if name == "ignore":
            continue
        if isinstance(value, (list, tuple)):
            raise RegionLabelsError(
                f"{where} defines regions ({name}: {value}); region-based evaluation is not supported, "
                "pass explicit label values instead"
            )
        if isinstance(value, bool) or not float(value).is_integer():
            raise ValueError(f"{where}: label {name!r} must be an integer, got {value!r}")
        if int(value) != 0:
            labels[int(value)] = str(name)
    return dict(sorted(labels.items()))


def evaluated_labels(source: dict | str | Path) -> list[int | tuple[int, ...]]:
    """What nnU-Net's evaluation scores: every foreground label, or for a region-based dataset every region
    (a tuple of the label values it unites; a one-value region is that int), in ``dataset.json`` order;
    ``background`` and ``ignore`` left out."""
    return list(evaluated_label_names(source))


def evaluated_label_names(source: dict | str | Path) -> dict[int | tuple[int, ...], str]:
    """:func:`evaluated_labels` -> their names in ``dataset.json``."""
    content, where = read_dataset_json(source)
    if "labels" not in content:
        raise ValueError(f"{where} has no 'labels' entry")
    out: dict[int | tuple[int, ...], str] = {}
    for name, value in content["labels"].items():
        if name in ("background", "ignore"):
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or any(
            not isinstance(v, (int, float)) or isinstance(v, bool) or not float(v).is_integer()
            for v in values
        ):
            raise ValueError(
                f"{where}: label {name!r} must be an integer or a list of integers, got {value!r}"
            )
        region = tuple(sorted({int(v) for v in values}))
        if region == (0,):
            continue
        out[region[0] if len(region) == 1 else region] = str(name)
    return out


def ignore_label(source: dict | str | Path) -> int | None:
    """nnU-Net's ignore label of the dataset (``labels["ignore"]``), or None."""
    content, where = read_dataset_json(source)
    value = content.get("labels", {}).get("ignore")
    if value is not None and (isinstance(value, bool) or not float(value).is_integer()):
        raise ValueError(f"{where}: the ignore label must be an integer, got {value!r}")
    return None if value is None else int(value)


def dataset_json_candidates(folder: str | Path) -> list[Path]:
    """Where a label folder's ``dataset.json`` may be: in it, or in its parent (``labelsTs`` sits beside
    ``dataset.json`` in a raw dataset)."""
    folder = Path(folder)
    return [folder / "dataset.json", folder.resolve().parent / "dataset.json"]


def find_dataset_json(folder: str | Path) -> Path | None:
    """The first of :func:`dataset_json_candidates` that exists, or None."""
    return next((c for c in dataset_json_candidates(folder) if c.is_file()), None)
