"""Compare prediction folders: per-class mean +- sd table (markdown) and violin plots (PNG).

Each prediction folder is evaluated with :func:`~nnunet_sdm.evaluation.evaluate.evaluate_folders`, unless
it already holds a summary (``summary_surface.json``, what ``nnunet-sdm evaluate`` writes by default) that
*matches*: the same prediction files, references that are the same files in the reference folder, every
requested label and metric present, and written after every prediction and reference file was last
modified. A new evaluation is written there (JSON + CSV), so the next comparison reuses it.

Statistics are over the cases common to all methods (cases missing from some method are reported and
left out): mean +- sample sd (ddof = 1; 0 for a single case). The best mean per row is bold: lowest
for HD95 and ASSD, highest for Dice and NSD; equal means are all bold.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_sdm.dataset_json import evaluated_label_names, find_dataset_json
from nnunet_sdm.evaluation.evaluate import (
    SUMMARY_NAME,
    evaluate_folders,
    higher_is_better,
    metric_label,
    metric_names,
    normalise_labels,
    write_summary,
)
from nnunet_sdm.plots import comparison_violins

__all__ = [
    "Comparison",
    "SUMMARY_NAME",
    "compare_folders",
    "load_or_evaluate",
    "summary_matches",
    "markdown_table",
    "metric_names",
    "higher_is_better",
    "write_comparison",
]


# ----------------------------------------------------------------------------------------------------
# reuse or evaluate
# ----------------------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def summary_matches(
    summary: dict,
    summary_file: Path,
    gt_dir: Path,
    pred_dir: Path,
    labels: Sequence[int],
    tolerances: Sequence[float],
    file_ending: str = ".nii.gz",
) -> tuple[bool, str]:
    """Whether ``summary`` (read from ``summary_file``) is an up-to-date evaluation of these folders."""
    try:
        cases = summary["metric_per_case"]
        predictions = sorted(
            p.name for p in pred_dir.iterdir() if p.is_file() and p.name.endswith(file_ending)
        )
        if sorted(Path(c["prediction_file"]).name for c in cases) != predictions:
            return False, "its cases are not the prediction files of the folder"
        written = summary_file.stat().st_mtime
        wanted = metric_names(tolerances)
        for case in cases:
            name = Path(case["prediction_file"]).name
            reference = Path(case["reference_file"])
            if reference.name != name or not _same_file(reference, gt_dir / name):
                return False, f"case {name} was evaluated against {reference}, not {gt_dir / name}"
            for label in labels:
                values = case["metrics"].get(str(label))
                if values is None or any(m not in values for m in wanted):
                    return False, f"label {label} or a metric of {wanted} is missing"
            if max((pred_dir / name).stat().st_mtime, (gt_dir / name).stat().st_mtime) > written:
                return False, f"{name} changed after the summary was written"
    except (KeyError, TypeError, OSError) as error:
        return False, f"unreadable summary ({error!r})"
    return True, "up to date"


def load_or_evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path,
    labels: Sequence[int],
    tolerances: Sequence[float] = (1.0, 2.0),
    num_workers: int = 2,
    file_ending: str = ".nii.gz",
    progress: bool = True,
    log=print,
) -> dict:
    """The folder's matching ``summary_surface.json``, or a new evaluation (then written there)."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    summary_file = pred_dir / SUMMARY_NAME
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError:
            summary, ok, why = None, False, "not valid JSON"
        else:
            ok, why = summary_matches(
                summary, summary_file, gt_dir, pred_dir, labels, tolerances, file_ending
            )
        if ok:
            log(f"{pred_dir}: reusing {summary_file.name}")
            return summary
        log(f"{pred_dir}: not reusing {summary_file.name}: {why}")
    summary = evaluate_folders(
        gt_dir.resolve(), pred_dir.resolve(), labels, tolerances, num_workers, file_ending, progress
    )
    write_summary(summary, summary_file, summary_file.with_suffix(".csv"))
    log(f"{pred_dir}: wrote {summary_file.name}")
    return summary


# ----------------------------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Per-case values of every method: ``values[method][label][metric]`` is an array over ``cases``."""

    methods: list[str]
    labels: list[int]
    metrics: list[str]
    cases: list[str]
    values: dict[str, dict[int, dict[str, np.ndarray]]]
    label_names: dict[int, str] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def stats(self, method: str, label: int, metric: str) -> tuple[float, float]:
        x = self.values[method][label][metric]
        x = x[np.isfinite(x)]
        if x.size == 0:
            return math.nan, math.nan
        return float(np.mean(x)), float(np.std(x, ddof=1)) if x.size > 1 else 0.0

    def class_name(self, label: int) -> str:
        name = self.label_names.get(label)
        return f"{label} ({name})" if name else str(label)


def method_names(folders: Sequence[str | Path]) -> list[str]:
    """Folder names; where two are equal, as many parent folders as needed to tell them apart."""
    paths = [Path(f).resolve() for f in folders]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p.parts[-d:]) for p, d in zip(paths, depth)]
        clashes = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(paths[i].parts)]
        if not clashes:
            return names
        for i in clashes:
            depth[i] += 1


def _label_names(gt_dir: Path, dataset_json: str | Path | None) -> dict[int, str]:
    """Class (or region) names for the table (none if there is no readable dataset.json)."""
    found = dataset_json or find_dataset_json(gt_dir)
    try:
        return evaluated_label_names(found) if found else {}
    except ValueError:
        return {}


def compare_folders(
    pred_dirs: Sequence[str | Path],
    gt_dir: str | Path,
    labels: Sequence[int],
    tolerances: Sequence[float] = (1.0, 2.0),
    names: Sequence[str] | None = None,
    num_workers: int = 2,
    dataset_json: str | Path | None = None,
    file_ending: str = ".nii.gz",
    progress: bool = True,
    log=print,
) -> Comparison:
    """Evaluate (or reuse) every prediction folder and collect per-case values on the common cases."""
    labels = normalise_labels(labels)
    if not pred_dirs:
        raise ValueError("give at least one prediction folder")
    names = list(names) if names else method_names(pred_dirs)
    if len(names) != len(pred_dirs):
        raise ValueError(f"{len(names)} names for {len(pred_dirs)} prediction folders")
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    gt_dir = Path(gt_dir)
    metrics = metric_names(tolerances)
    per_method = {}
    for name, folder in zip(names, pred_dirs):
        summary = load_or_evaluate(
            folder, gt_dir, labels, tolerances, num_workers, file_ending, progress, log
        )
        per_method[name] = {Path(c["prediction_file"]).name: c["metrics"] for c in summary["metric_per_case"]}
    common = sorted(set.intersection(*(set(cases) for cases in per_method.values())))
    if not common:
        raise ValueError(f"the prediction folders have no case in common: {list(pred_dirs)}")
    excluded = {name: sorted(set(cases) - set(common)) for name, cases in per_method.items()}
    excluded = {k: v for k, v in excluded.items() if v}
    if excluded:
        print(f"warning: cases not predicted by every method are left out: {excluded}", file=sys.stderr)
    values = {
        name: {
            label: {m: np.array([cases[c][str(label)][m] for c in common], dtype=np.float64) for m in metrics}
            for label in labels
        }
        for name, cases in per_method.items()
    }
    return Comparison(
        methods=names,
        labels=labels,
        metrics=metrics,
        cases=[_strip(c, file_ending) for c in common],
        values=values,
        label_names=_label_names(gt_dir, dataset_json),
        excluded=excluded,
    )


def _strip(name: str, ending: str) -> str:
    return name[: -len(ending)] if name.endswith(ending) else name


def _format(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if higher_is_better(metric) else f"{value:.2f}"


def markdown_table(comparison: Comparison) -> str:
    """Rows: class x metric; columns: methods; cells ``mean ± sd``; best mean per row in bold."""
    header = ["Class", "Metric", *comparison.methods]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + [":---:"] * len(comparison.methods)) + "|",
    ]
    for label in comparison.labels:
        for k, metric in enumerate(comparison.metrics):
            stats = [comparison.stats(m, label, metric) for m in comparison.methods]
            means = [s[0] for s in stats if math.isfinite(s[0])]
            best = (max(means) if higher_is_better(metric) else min(means)) if means else math.nan
            cells = []
            for mean, sd in stats:
                text = f"{_format(mean, metric)} ± {_format(sd, metric)}" if math.isfinite(mean) else "n/a"
                cells.append(f"**{text}**" if len(stats) > 1 and mean == best else text)
            name = comparison.class_name(label) if k == 0 else ""
            lines.append("| " + " | ".join([name, metric_label(metric), *cells]) + " |")
    notes = [
        "",
        f"Mean ± sample sd over {len(comparison.cases)} cases; bold: best mean per row "
        "(↑ higher is better, ↓ lower is better). HD95, ASSD and NSD follow the DeepMind / FLARE definitions; "
        "a structure missing from the reference or the prediction counts as HD95 = ASSD = image diagonal, "
        "NSD = Dice = 0.",
    ]
    if comparison.excluded:
        notes.append(f"Left out (not predicted by every method): {comparison.excluded}.")
    return "\n".join(lines + notes) + "\n"


def write_comparison(comparison: Comparison, out_prefix: str | Path) -> tuple[Path, Path]:
    """Write ``<out_prefix>.md`` (the table) and ``<out_prefix>.png`` (violin plots)."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    md = out_prefix.with_name(out_prefix.name + ".md")
    png = out_prefix.with_name(out_prefix.name + ".png")
    md.write_text(markdown_table(comparison))
    comparison_violins(comparison, png)
    return md, png
