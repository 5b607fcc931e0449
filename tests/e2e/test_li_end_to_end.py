"""Li et al.'s trainers through nnU-Net's real commands: LR-Net pre-training, freezing, checkpoints, resume, predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from nnunet_sdm.network.lrnet import LRNet
from nnunet_sdm.training.base import CHECKPOINT_EXTRAS_KEY
from nnunet_sdm.training.li import LRNET_CHECKPOINT_KEY, LRNET_FILE, PRETRAIN_ITERATIONS_ENV
from tests.conftest import nnunet_train, predict_and_check, smoke_budget

pytestmark = pytest.mark.slow

PLANS = "nnUNetPlans_cpu_small"
BUDGET = smoke_budget(**{PRETRAIN_ITERATIONS_ENV: "4"})


def train(env: dict, trainer: str, *extra: str):
    return nnunet_train(env, trainer, "-p", PLANS, *extra)


def fold_folder(results: Path, raw: Path, trainer: str) -> Path:
    """The fold folder under the nnUNet_results root ``results``."""
    return results / raw.name / f"{trainer}__{PLANS}__3d_fullres" / "fold_0"


def newest_log(fold) -> str:
    return sorted(fold.glob("training_log_*.txt"))[-1].read_text()


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def trained_li(planned_synthetic):
    """nnUNetTrainerLRNetMapDice (MapDice + alpha smooth L1 through the frozen LR-Net), one tiny epoch."""
    env = {**planned_synthetic["env"], **BUDGET}
    result = train(env, "nnUNetTrainerLRNetMapDice")
    fold = fold_folder(
        Path(planned_synthetic["env"]["nnUNet_results"]),
        planned_synthetic["raw"],
        "nnUNetTrainerLRNetMapDice",
    )
    return {**planned_synthetic, "env": env, "fold": fold, "stdout": result.stdout}


def test_lrnet_is_pretrained_saved_and_frozen(trained_li):
    fold = trained_li["fold"]
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()
    log = newest_log(fold)
    assert "LR-Net pre-training: 4 iterations" in log and "LR-Net pre-training iteration 4/4" in log
    assert "train loss terms:" in log and "map_dice" in log and "lrnet_smooth_l1" in log
    # lrnet.pth (written after pre-training, before epoch 0) rebuilds the LR-Net ...
    saved = load(fold / LRNET_FILE)
    lrnet = LRNet(saved["in_channels"], saved["out_channels"], torch.nn.Conv3d, saved["features"])
    lrnet.load_state_dict(saved["state_dict"], strict=True)
    assert (saved["in_channels"], saved["out_channels"]) == (3, 2)  # background + 2 classes -> 2 NI-DMs
    # ... and equals the weights in the final checkpoint: the main training left the LR-Net untouched
    checkpoint = load(fold / "checkpoint_final.pth")
    for key, value in saved["state_dict"].items():
        assert torch.equal(
            checkpoint[CHECKPOINT_EXTRAS_KEY][LRNET_CHECKPOINT_KEY]["state_dict"][key], value
        ), key
    # the segmentation network's weights hold no LR-Net parameter
    assert not any("lrnet" in k for k in checkpoint["network_weights"])


def test_checkpoint_loads_strictly_in_the_stock_predictor(trained_li, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    monkeypatch.setenv(
        "nnUNet_extTrainer", trained_li["env"]["nnUNet_extTrainer"]
    )  # the predictor finds the trainer
    model = trained_li["fold"].parent
    predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
    checkpoint = load(trained_li["fold"] / "checkpoint_final.pth")
    predictor.network.load_state_dict(checkpoint["network_weights"], strict=True)
    x = torch.zeros(1, 1, *predictor.configuration_manager.patch_size)
    with torch.no_grad():
        assert predictor.network.eval()(x).shape[1] == 3


def test_predict_uses_the_segmentation_network_alone(trained_li, tmp_path):
    predict_and_check(
        trained_li["env"], trained_li["raw"], tmp_path / "pred", "nnUNetTrainerLRNetMapDice", PLANS
    )


def test_resume_restores_the_lrnet_without_pretraining(trained_li, tmp_path):
    # resume a copy, so the other tests keep the one-epoch model
    results = tmp_path / "results"
    model = trained_li["fold"].parent
    shutil.copytree(model, results / trained_li["raw"].name / model.name)
    env = {**trained_li["env"], "nnUNet_results": str(results), "nnUNetSDM_num_epochs": "2"}
    result = train(env, "nnUNetTrainerLRNetMapDice", "--c")
    fold = fold_folder(results, trained_li["raw"], "nnUNetTrainerLRNetMapDice")
    log = newest_log(fold)
    for text in (result.stdout, log):
        assert "LR-Net: weights loaded from checkpoint_final.pth" in text
        assert "pre-training skipped" in text
        assert "LR-Net pre-training:" not in text
    checkpoint = load(fold / "checkpoint_final.pth")
    assert checkpoint["current_epoch"] == 2
    first = load(trained_li["fold"] / LRNET_FILE)["state_dict"]
    for key, value in first.items():
        assert torch.equal(
            checkpoint[CHECKPOINT_EXTRAS_KEY][LRNET_CHECKPOINT_KEY]["state_dict"][key], value
        ), key
        assert torch.equal(load(fold / LRNET_FILE)["state_dict"][key], value), key


@pytest.mark.parametrize(
    ("trainer", "terms", "absent"),
    [
        ("nnUNetTrainerMapDice", ["map_dice"], ["lrnet_smooth_l1", "LR-Net"]),
        (
            "nnUNetTrainerLRNet",
            ["dice", "lrnet_smooth_l1", "LR-Net pre-training iteration 4/4"],
            ["map_dice"],
        ),
    ],
)
def test_map_dice_and_lrnet_trainers_train(planned_synthetic, trainer, terms, absent):
    env = {**planned_synthetic["env"], **BUDGET}
    train(env, trainer)
    fold = fold_folder(Path(planned_synthetic["env"]["nnUNet_results"]), planned_synthetic["raw"], trainer)
    assert (fold / "checkpoint_final.pth").is_file()
    log = newest_log(fold)
    for text in terms:
        assert text in log
    for text in absent:
        assert text not in log
    assert (fold / LRNET_FILE).is_file() == (trainer == "nnUNetTrainerLRNet")
