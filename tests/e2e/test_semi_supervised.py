"""The semi-supervised trainer through nnU-Net's real commands: ``nnUNetv2_train`` on the planned synthetic
dataset with its unlabeled cases (``nnunet-sdm synth --unlabeled``, ``preprocess-unlabeled``), then stock
``nnUNetv2_predict``."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from tests.conftest import PLANS, UNLABELED_CASES, nnunet_bin, predict_and_check, run, smoke_budget

NAME = "nnUNetTrainerSDM_SemiSupervised"


@pytest.mark.slow
def test_train_on_labeled_and_unlabeled_then_predict_with_stock_nnunet(planned_synthetic, tmp_path):
    env = {**planned_synthetic["env"], **smoke_budget(epochs=2, iterations=3)}
    run(
        [nnunet_bin("nnUNetv2_train"), "990", "3d_fullres", "0", "-tr", NAME, "-p", PLANS, "-device", "cpu"],
        env,
    )
    fold = (
        Path(env["nnUNet_results"])
        / planned_synthetic["raw"].name
        / f"{NAME}__{PLANS}__3d_fullres"
        / "fold_0"
    )
    assert (fold / "checkpoint_final.pth").is_file()
    log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    assert f"semi-supervised: {UNLABELED_CASES} unlabeled cases" in log
    assert "batches of 2 labeled + 2 unlabeled patches" in log
    terms = re.findall(r"train loss terms: (.*)", log)
    assert len(terms) == 2 and all(f" {t} " in f" {terms[0]}" for t in ("consistency", "dice_ce", "l2"))
    losses = [float(v) for v in re.findall(r"train_loss (\S+)", log)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    predict_and_check(env, planned_synthetic["raw"], tmp_path / "pred", NAME, PLANS, "--disable_tta")


def test_synth_writes_unlabeled_images(tmp_path):
    run(
        [
            nnunet_bin("nnunet-sdm"),
            "synth",
            str(tmp_path),
            "--num-training",
            "2",
            "--num-test",
            "1",
            "--unlabeled",
            "2",
        ],
        dict(os.environ),
    )
    folder = tmp_path / "Dataset990_SDMSynth"
    assert sorted(p.name for p in (folder / "imagesUnlabeled").iterdir()) == [
        "SDMSynth_003_0000.nii.gz",
        "SDMSynth_004_0000.nii.gz",
    ]
    assert len(list((folder / "labelsTr").iterdir())) == 2
