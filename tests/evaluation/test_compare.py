"""`nnunet-sdm evaluate` and `nnunet-sdm compare` end to end on small NIfTI folders."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.cli import main
from nnunet_sdm.evaluation.compare import (
    SUMMARY_NAME,
    compare_folders,
    higher_is_better,
    load_or_evaluate,
    markdown_table,
    method_names,
)

SPACING = (2.0, 0.8, 1.0)  # numpy axis order
SHAPE = (10, 24, 20)


def _write(array, path, spacing=SPACING):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(reversed(spacing)))
    sitk.WriteImage(image, str(path))


def _reference(i):
    gt = np.zeros(SHAPE, dtype=np.uint8)
    gt[2:8, 4 + i : 14 + i, 3:12] = 1
    gt[3:9, 18:21, 14:17] = 2
    return gt


@pytest.fixture
def folders(tmp_path):
    """Reference + two methods: ``good`` is shifted by one voxel, ``eroded`` loses a layer of class 1."""
    gt_dir, good, eroded = tmp_path / "labelsTs", tmp_path / "good", tmp_path / "eroded"
    for d in (gt_dir, good, eroded):
        d.mkdir()
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "organ": 1, "vessel": 2}, "file_ending": ".nii.gz"})
    )
    for i in range(3):
        gt = _reference(i)
        _write(gt, gt_dir / f"case_{i}.nii.gz")
        _write(np.roll(gt, 1, axis=1), good / f"case_{i}.nii.gz")
        worse = gt.copy()
        worse[2:8, 4 + i : 14 + i, 3] = 0
        worse[2:8, 4 + i : 14 + i, 11] = 0
        _write(worse, eroded / f"case_{i}.nii.gz")
    return tmp_path, gt_dir, good, eroded


def test_evaluate_command_writes_json_and_csv_with_a_progress_bar(folders, capsys):
    _, gt_dir, good, _ = folders
    out = good / "eval" / "summary.json"
    assert main(["evaluate", str(gt_dir), str(good), "-o", str(out), "-np", "1"]) == 0
    captured = capsys.readouterr()
    assert "evaluating" in captured.err and "3/3" in captured.err  # tqdm progress bar
    summary = json.loads(out.read_text())
    assert set(summary["mean"]) == {"1", "2"}
    assert {"Dice", "HD95", "ASSD", "NSD@1.0mm", "NSD@2.0mm"} <= set(summary["mean"]["1"])
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 and rows[0].startswith("case,label,")


def test_compare_table_bold_and_statistics(folders):
    _, gt_dir, good, eroded = folders
    comparison = compare_folders(
        [good, eroded], gt_dir, [1, 2], progress=False, num_workers=1, log=lambda m: None
    )
    assert comparison.methods == ["good", "eroded"]
    assert comparison.cases == ["case_0", "case_1", "case_2"]
    assert comparison.label_names == {1: "organ", 2: "vessel"}
    dice = comparison.values["good"][1]["Dice"]
    assert comparison.stats("good", 1, "Dice") == pytest.approx((dice.mean(), dice.std(ddof=1)))
    table = markdown_table(comparison)
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 2 * 5
    for k, row in enumerate(rows):
        metric, label = row[1].strip().split(" ")[0], 1 if k < 5 else 2
        means = [comparison.stats(m, label, metric)[0] for m in comparison.methods]
        best = max(means) if higher_is_better(metric) else min(means)
        for cell, mean in zip(row[2:], means):
            assert cell.strip().startswith("**") == (mean == best), (row, means)
    # class 2 is perfect in "eroded" only, so bold there whichever direction is better
    vessel_hd = rows[5 + 1]
    assert "**0.00 ± 0.00**" in vessel_hd[3] and "**" not in vessel_hd[2]
    assert "Mean ± sample sd over 3 cases" in table


def test_summary_is_reused_only_when_it_matches(folders):
    _, gt_dir, good, _ = folders
    messages = []
    first = load_or_evaluate(good, gt_dir, [1, 2], (1.0,), num_workers=1, progress=False, log=messages.append)
    assert (good / SUMMARY_NAME).is_file() and "wrote" in messages[-1]
    again = load_or_evaluate(good, gt_dir, [1, 2], (1.0,), num_workers=1, progress=False, log=messages.append)
    assert "reusing" in messages[-1] and again == first
    # another tolerance is not in the summary
    load_or_evaluate(good, gt_dir, [1, 2], (3.0,), num_workers=1, progress=False, log=messages.append)
    assert "not reusing" in messages[-2] and "wrote" in messages[-1]
    # a prediction changed after the summary was written
    later = time.time() + 5
    os.utime(good / "case_1.nii.gz", (later, later))
    load_or_evaluate(good, gt_dir, [1, 2], (3.0,), num_workers=1, progress=False, log=messages.append)
    assert "changed after" in messages[-2]
    # evaluated against other references
    other = gt_dir.parent / "other_gt"
    other.mkdir()
    for f in gt_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    load_or_evaluate(good, other, [1, 2], (3.0,), num_workers=1, progress=False, log=messages.append)
    assert "evaluated against" in messages[-2]
    # nnU-Net's own summary.json shape (no surface metrics) is not a match
    (good / SUMMARY_NAME).write_text(json.dumps({"metric_per_case": [], "mean": {}}))
    load_or_evaluate(good, gt_dir, [1, 2], (1.0,), num_workers=1, progress=False, log=messages.append)
    assert "not reusing" in messages[-2]


def test_compare_command_writes_markdown_and_png(folders, tmp_path):
    root, gt_dir, good, eroded = folders
    (eroded / "case_2.nii.gz").unlink()  # a case missing from one method is left out, with a note
    out = tmp_path / "report" / "cmp"
    assert (
        main(
            [
                "compare",
                str(good),
                str(eroded),
                "--gt",
                str(gt_dir),
                "-o",
                str(out),
                "-np",
                "1",
                "--names",
                "A",
                "B",
                "--tolerance",
                "1",
                "2",
            ]
        )
        == 0
    )
    table = (tmp_path / "report" / "cmp.md").read_text()
    assert table.splitlines()[0] == "| Class | Metric | A | B |"
    assert "over 2 cases" in table and "case_2.nii.gz" in table
    import matplotlib.image

    png = matplotlib.image.imread(tmp_path / "report" / "cmp.png")
    assert png.ndim == 3 and png.shape[0] > 400 and png.shape[1] > 800
    assert png[..., :3].std() > 0.05  # not blank


def test_method_names_are_unique():
    assert method_names(["/a/x/pred", "/b/y/pred", "/c/z"]) == ["x/pred", "y/pred", "z"]
    with pytest.raises(ValueError, match="unique"):
        compare_folders(["/a", "/b"], "/gt", [1], names=["m", "m"])
