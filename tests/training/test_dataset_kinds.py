"""Region-based datasets (BraTS-style nested regions) and the ignore label (sparse annotation), in process.

- A/A: with the distance terms off, the flagship, the dual head and Calivá's penalised Dice + CE give
  stock ``nnUNetTrainer``'s loss and gradients on the same region-based batch, and on the same batch with
  ignore voxels (labels and regions).
- With the terms on, every trainer that supports the kind makes per-region / certified targets, trains a
  step and counts the validation pseudo Dice exactly as stock does.
- Trainers whose paper is not defined there stop at start-up, naming the setting and the trainers that do.
"""

from __future__ import annotations

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_sdm.distance import certified_signed_distance, signed_distance_masks
from nnunet_sdm.network import unwrap
from nnunet_sdm.training.base import UnsupportedSetupError
from nnunet_sdm.training.baselines import nnUNetTrainerBoundary, nnUNetTrainerHD
from nnunet_sdm.training.caliva import nnUNetTrainerDistPenaltyCE, nnUNetTrainerDistPenaltyDiceCE
from nnunet_sdm.training.li import nnUNetTrainerLRNet, nnUNetTrainerMapDice
from nnunet_sdm.training.sdm import nnUNetTrainerSDM
from nnunet_sdm.training.wang_zhang import nnUNetTrainerSDMDualHead
from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020, nnUNetTrainerSDM_Xue2020Truncated
from tests.training.test_stock_parity import DISTANCE_OFF, assert_stocks_loss_and_gradients

REGIONS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
KINDS = {
    "regions": REGIONS,
    "ignore": {"background": 0, "organ": 1, "vessel": 2, "ignore": 3},
    "regions+ignore": {**REGIONS, "ignore": 4},
}
SUPPORTING = [
    nnUNetTrainerSDM,
    nnUNetTrainerSDMDualHead,
    nnUNetTrainerDistPenaltyCE,
    nnUNetTrainerDistPenaltyDiceCE,
    nnUNetTrainerBoundary,
    nnUNetTrainerHD,
]
REFUSING = [
    nnUNetTrainerSDM_Xue2020,
    nnUNetTrainerSDM_Xue2020Truncated,
    nnUNetTrainerLRNet,
    nnUNetTrainerMapDice,
]


def label_map(trainer, seed: int, kind: str) -> torch.Tensor:
    """(B, 1, *patch) raw labels: nested boxes (regions) or two classes, unlabelled slices for the ignore label."""
    patch = trainer.configuration_manager.patch_size
    labels = torch.zeros(trainer.batch_size, 1, *patch)
    z, y = 2 + seed % 3, 6 + seed % 5
    if kind.startswith("regions"):
        labels[:, :, z:-2, y : y + 20, 8:30] = 1
        labels[:, :, z + 1 : -3, y + 3 : y + 16, 12:26] = 3
        labels[:, :, z + 2 : -4, y + 6 : y + 12, 16:22] = 2
    else:
        labels[:, :, z:-2, y : y + 14, 8:22] = 1
        labels[:, :, 4:7, 25:40, 30 + seed % 4 : 33 + seed % 4] = 2
    if "ignore" in kind:
        ignore = max(v if isinstance(v, int) else max(v) for v in KINDS[kind].values() if v != "ignore")
        unlabelled = torch.ones(patch[0], dtype=torch.bool)
        unlabelled[seed % 3 :: 3] = False  # every third slice annotated
        labels[:, :, unlabelled] = float(KINDS[kind]["ignore"])
        assert ignore == KINDS[kind]["ignore"]
    return labels


def loader_target(labels: torch.Tensor, kind: str) -> torch.Tensor:
    """What nnU-Net's loader gives at one scale: the labels, or bool region channels (+ ignore channel)."""
    if not kind.startswith("regions"):
        return labels
    channels = [labels >= 1, (labels == 2) | (labels == 3), labels == 3]
    if "ignore" in kind:
        channels = [c & (labels != 4) for c in channels] + [labels == 4]
    return torch.cat(channels, dim=1)


def complete_target(trainer, seed: int, kind: str) -> torch.Tensor:
    """The full-resolution target of ``batch_of`` with every label known (the truth behind the ignore label),
    in the loader's layout for the trainer's dataset."""
    if not kind.startswith("regions"):
        return label_map(trainer, seed, "labels")
    target = loader_target(label_map(trainer, seed, "regions"), "regions")
    return torch.cat([target, torch.zeros_like(target[:, :1])], dim=1)  # an empty ignore channel


def batch_of(trainer, seed: int, kind: str) -> dict:
    labels = label_map(trainer, seed, kind)
    patch = trainer.configuration_manager.patch_size
    targets = []
    for scale in trainer._get_deep_supervision_scales():
        shape = [round(p * s) for p, s in zip(patch, scale)]
        targets.append(
            loader_target(torch.nn.functional.interpolate(labels, shape, mode="nearest-exact"), kind)
        )
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(trainer.batch_size, 1, *patch, generator=generator) + (labels > 0).float()
    return {"data": data, "target": targets, "keys": ["a", "b"]}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("cls", DISTANCE_OFF, ids=lambda c: c.__name__)
def test_loss_and_gradients_are_stocks_with_the_distance_terms_off(make_trainer, cls, kind):
    stock, ours = make_trainer(nnUNetTrainer, labels=KINDS[kind]), make_trainer(cls, labels=KINDS[kind])
    assert ours.label_manager.has_regions == kind.startswith("regions")
    assert_stocks_loss_and_gradients(stock, ours, batch_of(stock, seed=3, kind=kind))


@pytest.mark.parametrize("kind", list(KINDS))
def test_pseudo_dice_is_counted_as_stock_counts_it(make_trainer, kind):
    stock, ours = (
        make_trainer(nnUNetTrainer, labels=KINDS[kind]),
        make_trainer(nnUNetTrainerSDM, labels=KINDS[kind]),
    )
    batch = batch_of(stock, seed=1, kind=kind)
    expected = stock.validation_step(
        {k: [t.clone() for t in v] if k == "target" else v for k, v in batch.items()}
    )
    got = ours.validation_step(batch)
    for key in ("tp_hard", "fp_hard", "fn_hard"):
        assert got[key].tolist() == expected[key].tolist(), key


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("cls", SUPPORTING, ids=lambda c: c.__name__)
def test_trainers_train_on_the_kind_with_certified_targets(make_trainer, cls, kind):
    trainer = make_trainer(cls, labels=KINDS[kind])
    trainer.current_epoch = trainer.num_epochs // 2  # past the flagship's ramp
    batch = batch_of(trainer, seed=2, kind=kind)
    targets = trainer.make_scale_targets(batch["target"])
    full = targets[0]
    regions = kind.startswith("regions")
    assert full.masks.shape[1] == (3 if regions else 2)
    if "ignore" in kind:
        assert full.known is not None and not full.known.all()
        if full.certified is not None:
            assert not (full.certified & ~full.known).any()  # unknown voxels are never certified
            # where certified, the target equals the one made from the complete (hidden) labels
            # (patch-normalised targets: normalised by the same certified voxels)
            complete = trainer.split_target(complete_target(trainer, 2, kind))
            sdm, _ = certified_signed_distance(complete.masks, None, full.spacing, tau=trainer.truncation_mm)
            reference = trainer.distance_from_sdm(sdm, full.certified, full.spacing)
            torch.testing.assert_close(
                full.distance.float()[full.certified], reference.float()[full.certified], rtol=0, atol=1e-4
            )
    else:
        assert full.known is None and full.certified is None
    if trainer.has_sdm_head:
        assert unwrap(trainer.network).num_sdm_channels == full.masks.shape[1]
    terms = trainer.train_step(batch)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in terms.values()), terms
    assert trainer.non_finite_in_a_row == 0


@pytest.mark.parametrize("kind", ["regions", "ignore"])
@pytest.mark.parametrize("cls", REFUSING, ids=lambda c: c.__name__)
def test_trainers_that_cannot_stop_at_start_up_and_name_the_alternatives(make_trainer, cls, kind):
    setting = "region-based" if kind == "regions" else "ignore label"
    with pytest.raises(UnsupportedSetupError, match=setting) as error:
        make_trainer(cls, labels=KINDS[kind])
    message = str(error.value)
    assert cls.__name__ in message and "nnUNetTrainerSDM," in message and "nnUNetTrainerHD" in message
    assert "Xue" not in message.split("support it:")[1] and "LRNet" not in message.split("support it:")[1]


def test_region_network_has_one_sdm_per_region_also_in_the_predictor(make_trainer):
    trainer = make_trainer(nnUNetTrainerSDM, labels=REGIONS)
    assert trainer.plans_manager.plans["nnunet_sdm"]["region_based"] is True  # saved with the plans.json
    network = nnUNetTrainerSDM.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, 3, enable_deep_supervision=False
    )
    assert network.num_seg_channels == 3 and network.num_sdm_channels == 3
    network.load_state_dict(unwrap(trainer.network).state_dict())


def test_sdm_targets_of_regions_are_the_regions_sdms(make_trainer):
    trainer = make_trainer(nnUNetTrainerSDMDualHead, labels=REGIONS)
    target = trainer.make_scale_targets(batch_of(trainer, seed=0, kind="regions")["target"])[0]
    expected = trainer.normalise_sdm(signed_distance_masks(target.masks, target.spacing), 3)
    torch.testing.assert_close(target.distance, expected)
