"""Start-up validation of every trainer of the project (the shims in ``nnunet_sdm/trainers/``).

Trainers are constructed in-process (cheap: no network, no data loader) on the planned synthetic dataset
990 with a modified ``dataset.json`` or a subclass with a nonsense class attribute. Every failure must
happen in ``__init__`` (before any training), name the trainer, and -- for settings -- the setting.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import torch

import nnunet_sdm
from nnunet_sdm.training.base import UnsupportedSetupError

SHIMS = Path(nnunet_sdm.__file__).parent / "trainers"


def shim_trainers() -> dict[str, type]:
    """Trainer name -> class for every one-line shim in nnunet_sdm/trainers/ (what nnU-Net can find)."""
    found = {}
    for shim in sorted(SHIMS.glob("nnUNetTrainer*.py")):
        match = re.search(r"^from (nnunet_sdm\.training\.\w+) import (\w+)", shim.read_text(), re.M)
        assert match, f"{shim} is not a one-line import shim"
        module, name = match.groups()
        assert name == shim.stem, f"{shim}: imports {name}"
        found[name] = getattr(importlib.import_module(module), name)
    return found


TRAINERS = shim_trainers()

#: per trainer family, nonsense settings (attribute, value[, message fragment if not the attribute's name])
#: that must stop the trainer at start-up
XUE_BAD = [
    ("heaviside_k", 0.0),
    ("heaviside_k", -1500.0),
    ("heaviside_k", float("nan")),
    ("sdm_weight", -1.0),
    ("dice_weight", -1.0),
    ("l1_weight", -0.5),
    ("product_weight", -1.0),
    ("product_weight", float("inf")),
]
FLAGSHIP_BAD = [
    ("truncation_mm", 0.0),
    ("truncation_mm", float("inf")),
    ("sdm_weight", -0.1),
    ("consistency_weight", float("nan")),
    ("heaviside_voxels", 0.0),
    ("ramp_fraction", -0.1),
    ("ramp_fraction", 1.5),
    ("sdm_weight", True),
]
BAD_SETTINGS: dict[str, list[tuple]] = {
    "nnUNetTrainerSDM": FLAGSHIP_BAD,
    "nnUNetTrainerSDM_NoRamp": FLAGSHIP_BAD,
    "nnUNetTrainerSDM_Weight1": FLAGSHIP_BAD,
    "nnUNetTrainerSDM_LongRamp": FLAGSHIP_BAD,
    "nnUNetTrainerSDM_DetachedHead": FLAGSHIP_BAD,
    "nnUNetTrainerSDM_SemiSupervised": [
        *FLAGSHIP_BAD,
        ("unlabeled_per_labeled", 0.0),
        ("unlabeled_per_labeled", -1.0),
        ("consistency_ramp_fraction", 1.5),
    ],
    "nnUNetTrainerSDM_Xue2020": XUE_BAD,
    "nnUNetTrainerSDM_Xue2020SDMOnly": [*XUE_BAD, ("sdm_weight", 0.0, "every term is switched off")],
    "nnUNetTrainerSDM_Xue2020L1": XUE_BAD,
    "nnUNetTrainerSDM_Xue2020TargetsInLoader": XUE_BAD,
    "nnUNetTrainerSDM_Xue2020Truncated": [*XUE_BAD, ("truncation_mm", 0.0), ("truncation_mm", -10.0)],
    "nnUNetTrainerSDM_Xue2020Adam": [
        *XUE_BAD,
        ("adam_lr", 0.0),
        ("adam_weight_decay", -1e-5),
        ("lr_gamma", 0.0),
        ("lr_gamma", 1.5),
        ("lr_step_epochs", 0),
    ],
    "nnUNetTrainerSDMDualHead": [("sdm_head_weight", -1.0), ("sdm_head_weight", float("nan"))],
    "nnUNetTrainerBoundary": [
        ("boundary_alpha_start", 0.0),
        ("boundary_alpha_start", 1.5),
        ("boundary_alpha_step", -0.01),
        ("boundary_alpha_floor", -0.01),
        ("boundary_alpha_floor", 2.0),
    ],
    "nnUNetTrainerHD": [("hd_alpha", 0.0), ("hd_alpha", -2.0), ("hd_lambda", -1.0)],
    "nnUNetTrainerDistPenaltyCE": [
        ("dice_weight", -1.0),
        ("penalised_ce_weight", -1.0),
        ("penalised_ce_weight", 0.0, "dice_weight and penalised_ce_weight are both 0"),
    ],
    "nnUNetTrainerDistPenaltyDiceCE": [("dice_weight", -1.0), ("penalised_ce_weight", -1.0)],
}
LI_BAD = [
    ("lrnet_loss_weight", -1.0),
    ("smooth_l1_beta", 0.0),
    ("dice_smooth", 0.0),
    ("lrnet_pretrain_lr", 0.0),
    ("ni_dm_offset", 0.0),
    ("ni_dm_offset", -1.0),
    ("segmentation_loss", "ce"),
    ("lrnet_features", 0),
    ("lrnet_pretrain_iterations", 0),
    ("lrnet_log_every", 0),
]
for _name in ("nnUNetTrainerMapDice", "nnUNetTrainerLRNet", "nnUNetTrainerLRNetMapDice"):
    BAD_SETTINGS[_name] = LI_BAD


def test_every_shim_has_nonsense_settings_listed():
    assert len(TRAINERS) >= 14
    assert set(BAD_SETTINGS) == set(TRAINERS)


@pytest.fixture
def setup(planned_synthetic, monkeypatch, tmp_path):
    """plans + dataset.json of dataset 990; nnU-Net's output folders go to tmp_path."""
    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    for variable in (
        "nnUNetSDM_num_epochs",
        "nnUNetSDM_iterations_per_epoch",
        "nnUNetSDM_val_iterations_per_epoch",
    ):
        monkeypatch.delenv(variable, raising=False)
    plans = json.loads((planned_synthetic["preprocessed"] / "nnUNetPlans_cpu_small.json").read_text())
    dataset_json = json.loads((planned_synthetic["preprocessed"] / "dataset.json").read_text())
    return plans, dataset_json


def construct(cls: type, plans: dict, dataset_json: dict):
    return cls({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json, torch.device("cpu"))


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_every_trainer_starts_on_the_label_dataset(setup, name):
    trainer = construct(TRAINERS[name], *setup)
    assert type(trainer).__name__ == name


DATASET_KINDS = {
    "region-based": (
        "supports_regions",
        {"labels": {"background": 0, "whole": [1, 2], "vessel": 2}, "regions_class_order": [1, 2]},
        r"is region-based \(dataset.json 'regions_class_order'\)",
    ),
    "ignore label": (
        "supports_ignore_label",
        {"labels": {"background": 0, "organ": 1, "vessel": 2, "ignore": 3}},
        r"has an ignore label \(3\)",
    ),
}


@pytest.mark.parametrize("kind", list(DATASET_KINDS))
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_every_trainer_starts_on_each_dataset_kind_or_stops_naming_it(setup, name, kind):
    """The project's rule (docs/usage.md): a trainer works on region-based datasets and with the ignore label, or stops at
    start-up with a message naming the dataset setting, why, and the trainers that support it."""
    plans, dataset_json = setup
    setting, changes, said = DATASET_KINDS[kind]
    dataset_json.update(changes)
    cls = TRAINERS[name]
    if getattr(cls, setting):
        trainer = construct(cls, plans, dataset_json)
        assert trainer.label_manager.has_regions == (kind == "region-based")
        return
    with pytest.raises(
        UnsupportedSetupError, match=rf"^{name}: dataset \S+ {said}, which {name} does not support: "
    ) as error:
        construct(cls, plans, dataset_json)
    supporters = str(error.value).split("Trainers that support it: ")[1]
    assert supporters.startswith("nnUNetTrainer, ") and "nnUNetTrainerSDM," in supporters
    assert all(
        getattr(TRAINERS[n], setting) for n in re.findall(r"nnUNetTrainer\w+", supporters) if n in TRAINERS
    )


@pytest.mark.parametrize(
    ("name", "bad"),
    [(name, bad) for name in sorted(BAD_SETTINGS) for bad in BAD_SETTINGS[name]],
    ids=lambda x: x if isinstance(x, str) else f"{x[0]}={x[1]}",
)
def test_nonsense_setting_stops_naming_the_trainer_and_the_setting(setup, name, bad):
    attribute, value, *fragment = bad
    bad_name = f"{name}_Bad"
    variant = type(bad_name, (TRAINERS[name],), {attribute: value})
    expected = re.escape(fragment[0] if fragment else attribute)
    with pytest.raises(ValueError, match=rf"^{bad_name}: .*{expected}") as error:
        construct(variant, *setup)
    assert not isinstance(error.value, UnsupportedSetupError)


@pytest.mark.parametrize("name", sorted(TRAINERS))
@pytest.mark.parametrize("labels", [{"background": 0, "a": 1, "b": 3}, {"background": 0, "a": 2}])
def test_non_consecutive_labels_stop_naming_the_trainer(setup, name, labels):
    plans, dataset_json = setup
    with pytest.raises(
        UnsupportedSetupError, match=rf"^{name}: dataset \S+ has labels .*consecutive labels 0..N"
    ):
        construct(TRAINERS[name], plans, {**dataset_json, "labels": labels})


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1.5"])
@pytest.mark.parametrize("variable", ["nnUNetSDM_num_epochs", "nnUNetSDM_iterations_per_epoch"])
def test_nonsense_budget_environment_variable_stops_naming_it(setup, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"{variable}='{re.escape(value)}': expected an integer >= 1"):
        construct(TRAINERS["nnUNetTrainerSDM_Xue2020"], *setup)


def test_budget_environment_variables_set_the_budget(setup, monkeypatch):
    monkeypatch.setenv("nnUNetSDM_num_epochs", "4")
    monkeypatch.setenv("nnUNetSDM_iterations_per_epoch", "3")
    monkeypatch.setenv("nnUNetSDM_val_iterations_per_epoch", "1")
    trainer = construct(TRAINERS["nnUNetTrainerSDM_Xue2020"], *setup)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (
        4,
        3,
        1,
    )


def test_nonsense_lrnet_pretrain_iterations_stops_naming_the_variable(setup, monkeypatch):
    monkeypatch.setenv("nnUNetSDM_lrnet_pretrain_iterations", "0")
    with pytest.raises(ValueError, match="nnUNetSDM_lrnet_pretrain_iterations='0': expected an integer >= 1"):
        construct(TRAINERS["nnUNetTrainerLRNet"], *setup)


#: infinite values (``not x > 0`` would let them through): caught at start-up, naming the setting
INFINITE_SETTINGS = [
    ("nnUNetTrainerSDM_Xue2020Truncated", "truncation_mm", float("inf")),
    ("nnUNetTrainerSDM_Xue2020Adam", "adam_lr", float("inf")),
    ("nnUNetTrainerSDM_Xue2020Adam", "adam_weight_decay", float("inf")),
]


@pytest.mark.parametrize(("name", "attribute", "value"), INFINITE_SETTINGS)
def test_infinite_setting_stops_naming_the_trainer_and_the_setting(setup, name, attribute, value):
    variant = type(f"{name}_Bad", (TRAINERS[name],), {attribute: value})
    with pytest.raises(ValueError, match=rf"^{name}_Bad: .*{attribute}"):
        construct(variant, *setup)
