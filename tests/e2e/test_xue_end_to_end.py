"""The flagship nnUNetTrainerSDM and Xue et al.'s nnUNetTrainerSDM_Xue2020 through nnU-Net's real commands:
train, predict, find_best_configuration, export, -pretrained_weights."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import nnunet_bin, nnunet_train, predict_and_check, run, smoke_budget, training_log

pytestmark = pytest.mark.slow

BUDGET = smoke_budget()


# trainer -> loss terms its loss_terms.json must hold
TERMS = {
    "nnUNetTrainerSDM": ("dice_ce", "l2", "product", "consistency"),
    "nnUNetTrainerSDM_Xue2020": ("dice", "l1", "product"),
}


@pytest.fixture(scope="module", params=list(TERMS))
def trained_sdm(planned_synthetic, request):
    trainer = request.param
    env = {**planned_synthetic["env"], **BUDGET}
    nnunet_train(env, trainer)
    model = planned_synthetic["results"] / f"{trainer}__nnUNetPlans__3d_fullres"
    return {**planned_synthetic, "env": env, "model": model, "trainer": trainer}


def test_training_writes_checkpoint_validation_and_loss_terms(trained_sdm):
    fold = trained_sdm["model"] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()
    log = training_log(fold)
    terms = TERMS[trained_sdm["trainer"]]
    assert "train loss terms:" in log and all(term in log for term in terms)
    assert (fold / "loss_terms.png").is_file()
    history = json.loads((fold / "loss_terms.json").read_text())
    assert {f"train/{t}" for t in terms} | {f"val/{t}" for t in terms} <= set(history)
    # the gradient norms of every term and their shares of the total, measured on each epoch's first batch
    assert {f"train/grad_norm/{t}" for t in terms} | {f"train/grad_share/{t}" for t in terms} <= set(history)
    assert history["train/grad_norm/loss"]["0"] > 0


def test_predict_gives_label_maps_with_the_images_geometry(trained_sdm, tmp_path):
    predict_and_check(trained_sdm["env"], trained_sdm["raw"], tmp_path / "pred", trained_sdm["trainer"])


def test_checkpoint_loads_strictly_in_the_stock_predictor(trained_sdm, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    for key, value in trained_sdm["env"].items():
        monkeypatch.setenv(key, value)

    predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(trained_sdm["model"]), (0,), "checkpoint_final.pth")
    checkpoint = torch.load(trained_sdm["model"] / "fold_0" / "checkpoint_final.pth", weights_only=False)
    predictor.network.load_state_dict(checkpoint["network_weights"], strict=True)
    x = torch.zeros(1, 1, *predictor.configuration_manager.patch_size)
    with torch.no_grad():
        assert predictor.network.eval()(x).shape[1] == 3  # background + 2 classes


def test_find_best_configuration_and_export(trained_sdm, tmp_path):
    env = trained_sdm["env"]
    model = [
        "-c",
        "3d_fullres",
        "-tr",
        trained_sdm["trainer"],
        "-f",
        "0",
    ]  # the trained model, for both commands
    run([nnunet_bin("nnUNetv2_find_best_configuration"), "990", *model], env)
    inference_info = trained_sdm["results"] / "inference_information.json"
    assert trained_sdm["trainer"] in json.dumps(json.loads(inference_info.read_text()))
    archive = tmp_path / "model.zip"
    run([nnunet_bin("nnUNetv2_export_model_to_zip"), "-d", "990", "-o", str(archive), *model], env)
    assert archive.stat().st_size > 0


@pytest.mark.parametrize("trainer", list(TERMS))
def test_pretrained_weights_from_a_stock_checkpoint_start_an_sdm_training(
    planned_synthetic, tmp_path, monkeypatch, trainer
):
    """-pretrained_weights with a stock nnUNetTrainer checkpoint: all but the 1x1 output layers transfer."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.run.run_training import get_trainer_from_args

    env = {**planned_synthetic["env"], **BUDGET}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    stock = get_trainer_from_args("990", "3d_fullres", 3, "nnUNetTrainer", device=torch.device("cpu"))
    stock.initialize()
    stock_checkpoint = tmp_path / "stock.pth"
    torch.save({"network_weights": stock.network.state_dict()}, stock_checkpoint)
    sdm = get_trainer_from_args("990", "3d_fullres", 4, trainer, device=torch.device("cpu"))
    sdm.initialize()
    load_pretrained_weights(sdm.network, str(stock_checkpoint))
    transferred = {k: v for k, v in stock.network.state_dict().items() if ".seg_layers." not in k}
    for key, value in transferred.items():
        assert torch.equal(sdm.network.state_dict()[key], value), key
    # and the real command accepts it
    run(
        [
            nnunet_bin("nnUNetv2_train"),
            "990",
            "3d_fullres",
            "2",
            "-tr",
            trainer,
            "-device",
            "cpu",
            "-pretrained_weights",
            str(stock_checkpoint),
        ],
        env,
    )
