"""The base trainer in-process on the tiny planned dataset: SDM targets per scale, non-finite stop."""

from __future__ import annotations

import pytest
import torch

from nnunet_sdm.network import unwrap
from nnunet_sdm.training.base import NonFiniteLossError, UnsupportedSetupError
from tests.conftest import synthetic_batch


@pytest.fixture
def sdm_trainer(planned_synthetic, monkeypatch, tmp_path):
    from nnunetv2.run.run_training import get_trainer_from_args

    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # its log stays out of the end-to-end tests' folders
    trainer = get_trainer_from_args(
        "990",
        "3d_fullres",
        0,
        "nnUNetTrainerSDM_Xue2020",
        "nnUNetPlans_cpu_small",
        device=torch.device("cpu"),
    )
    trainer.initialize()
    return trainer


def test_scale_targets_heaviside_gives_back_each_scales_labels(sdm_trainer):
    batch = synthetic_batch(sdm_trainer)
    full_shape = batch["target"][0].shape[2:]
    for target in batch["target"]:
        scale = sdm_trainer.make_scale_target(target, full_shape)
        assert scale.distance.shape == scale.onehot.shape
        assert scale.distance.abs().max() <= 1.0
        assert torch.equal((scale.distance < 0).float(), scale.onehot)


def test_train_step_returns_finite_terms(sdm_trainer):
    out = sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    assert set(out) == {"loss", "dice", "l1", "product"}
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in out.values())


def test_non_finite_loss_skips_the_step_and_stops_after_a_run(sdm_trainer, monkeypatch):
    before = {k: v.clone() for k, v in unwrap(sdm_trainer.network).state_dict().items()}
    good_loss = sdm_trainer.scale_loss

    def nan_loss(output, target):
        return {"loss": output.sdm.sum() * float("nan"), "l1": output.sdm.mean() * float("nan")}

    monkeypatch.setattr(sdm_trainer, "max_non_finite_steps", 3)
    monkeypatch.setattr(sdm_trainer, "scale_loss", nan_loss)
    sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    assert sdm_trainer.non_finite_in_a_row == 2
    monkeypatch.setattr(sdm_trainer, "scale_loss", good_loss)  # a finite step ends the run
    sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    assert sdm_trainer.non_finite_in_a_row == 0
    monkeypatch.setattr(sdm_trainer, "scale_loss", nan_loss)
    after_good = {k: v.clone() for k, v in unwrap(sdm_trainer.network).state_dict().items()}
    assert not all(torch.equal(before[k], after_good[k]) for k in before)  # the good step trained
    sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 0.*l1.*3 steps in a row"):
        sdm_trainer.train_step(synthetic_batch(sdm_trainer))
    after = unwrap(sdm_trainer.network).state_dict()
    assert all(torch.equal(after_good[k], after[k]) for k in after)


def test_region_datasets_stop_at_start_up(planned_synthetic, monkeypatch, tmp_path):
    import json

    from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020

    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # its log stays out of the end-to-end tests' folders
    plans = json.loads((planned_synthetic["preprocessed"] / "nnUNetPlans_cpu_small.json").read_text())
    dataset_json = json.loads((planned_synthetic["preprocessed"] / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "whole": [1, 2], "vessel": 2}
    dataset_json["regions_class_order"] = [1, 2]
    plans["continue_training"] = False
    with pytest.raises(UnsupportedSetupError, match="nnUNetTrainerSDM_Xue2020.*region-based"):
        nnUNetTrainerSDM_Xue2020(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


@pytest.mark.parametrize("setting", [{"heaviside_k": 0.0}, {"sdm_weight": -1.0}, {"truncation_mm": 0.0}])
def test_nonsense_settings_stop_at_start_up(planned_synthetic, monkeypatch, setting, tmp_path):
    import json

    from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020Truncated

    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # its log stays out of the end-to-end tests' folders
    plans = json.loads((planned_synthetic["preprocessed"] / "nnUNetPlans_cpu_small.json").read_text())
    dataset_json = json.loads((planned_synthetic["preprocessed"] / "dataset.json").read_text())
    plans["continue_training"] = False
    variant = type("nnUNetTrainerSDM_Bad", (nnUNetTrainerSDM_Xue2020Truncated,), setting)
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"nnUNetTrainerSDM_Bad.*{name.split('_')[0]}"):
        variant(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_checkpoint_round_trip_keeps_extras(sdm_trainer, tmp_path, monkeypatch):
    monkeypatch.setattr(sdm_trainer, "checkpoint_extras", lambda: {"answer": 42})
    seen = {}
    monkeypatch.setattr(
        sdm_trainer, "load_checkpoint_extras", lambda extras, source: seen.update(extras, source=source)
    )
    path = str(tmp_path / "checkpoint.pth")
    sdm_trainer.save_checkpoint(path)
    sdm_trainer.load_checkpoint(path)
    assert seen == {"answer": 42, "source": "checkpoint.pth"}


def test_truncated_foreign_and_other_trainers_checkpoints_are_named(sdm_trainer, tmp_path):
    from nnunet_sdm.training.base import CheckpointError

    good = tmp_path / "good.pth"
    sdm_trainer.save_checkpoint(str(good))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: cannot be read.*truncated"):
        sdm_trainer.load_checkpoint(str(truncated))
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pth: not an nnU-Net training checkpoint"):
        sdm_trainer.load_checkpoint(str(foreign))
    other = tmp_path / "other.pth"
    checkpoint = torch.load(good, weights_only=False)
    checkpoint["trainer_name"] = "nnUNetTrainer"
    torch.save(checkpoint, other)
    with pytest.raises(
        CheckpointError, match="written by trainer nnUNetTrainer, not nnUNetTrainerSDM_Xue2020"
    ):
        sdm_trainer.load_checkpoint(str(other))


class NetworkWithoutOutputLayers(torch.nn.Module):
    """A network that nnU-Net can build from plans but that has no ``decoder.seg_layers``."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(input_channels, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_a_network_without_output_layers_stops_with_its_name():
    from types import SimpleNamespace

    from nnunet_sdm.training.sdm import nnUNetTrainerSDM

    name = f"{__name__}.NetworkWithoutOutputLayers"
    configuration = SimpleNamespace(
        network_arch_class_name=name, network_arch_init_kwargs={}, network_arch_init_kwargs_req_import=[]
    )
    with pytest.raises(UnsupportedSetupError, match=rf"nnUNetTrainerSDM: the network {name} has no decoder"):
        nnUNetTrainerSDM.build_network_architecture(SimpleNamespace(plans={}), configuration, 1, 3, True)
