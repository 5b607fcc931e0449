"""A/A tests: with the distance terms switched off, our trainers are stock nnU-Net.

Same network weights from the same random state (segmentation rows of the output layers included), the
same loss and the same gradients on the same batch, and the same loss curve over a short seeded training
on fixed batches (no augmentation). A departure of the base trainer's plumbing from ``nnUNetTrainer``
(deep-supervision weights, loss configuration, initialisation, clipping, optimiser) fails here.
"""

from __future__ import annotations

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_sdm.network import load_warm_start, set_sdm_trunk_gradient_scale, unwrap
from nnunet_sdm.training.caliva import nnUNetTrainerDistPenaltyDiceCE
from nnunet_sdm.training.sdm import nnUNetTrainerSDM, nnUNetTrainerSDM_DetachedHead
from nnunet_sdm.training.wang_zhang import nnUNetTrainerSDMDualHead


class FlagshipOff(nnUNetTrainerSDM):
    sdm_weight = 0.0
    consistency_weight = 0.0


class DualHeadOff(nnUNetTrainerSDMDualHead):
    sdm_head_weight = 0.0


class PenaltyOff(nnUNetTrainerDistPenaltyDiceCE):
    def distance_target(self, target):  # Phi = 0: the penalised CE is plain CE
        masks = target.masks
        channels = masks.shape[1] if self.region_based else 1
        return torch.zeros(masks.shape[0], channels, *masks.shape[2:], device=masks.device), None


DISTANCE_OFF = [FlagshipOff, DualHeadOff, PenaltyOff]


def fixed_batch(trainer, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    labels = torch.zeros(trainer.batch_size, 1, *patch)
    z, y = 2 + seed % 3, 6 + seed % 5
    labels[:, :, z:-2, y : y + 14, 8:22] = 1
    labels[:, :, 4:7, 25:40, 30 + seed % 4 : 33 + seed % 4] = 2
    targets = [labels]
    for scale in trainer._get_deep_supervision_scales()[1:]:
        shape = [round(p * s) for p, s in zip(patch, scale)]
        targets.append(torch.nn.functional.interpolate(labels, shape, mode="nearest-exact"))
    data = torch.randn(trainer.batch_size, 1, *patch, generator=generator) + labels
    return {"data": data, "target": targets, "keys": ["a", "b"]}


def stock_loss(trainer: nnUNetTrainer, batch: dict) -> torch.Tensor:
    return trainer.loss(trainer.network(batch["data"]), batch["target"])


def our_loss(trainer, batch: dict) -> torch.Tensor:
    return trainer.forward_and_loss(batch["data"], batch["target"])[2]["loss"]


def seg_rows(name: str, value: torch.Tensor, stock_value: torch.Tensor) -> torch.Tensor:
    """Our weight restricted to stock's layout (the segmentation rows of an output layer)."""
    return value[: stock_value.shape[0]] if ".seg_layers." in name else value


@pytest.mark.parametrize("cls", [nnUNetTrainerSDM, nnUNetTrainerSDMDualHead, nnUNetTrainerDistPenaltyDiceCE])
def test_initialisation_is_stocks(make_trainer, cls):
    stock = unwrap(make_trainer(nnUNetTrainer).network).state_dict()
    ours = unwrap(make_trainer(cls).network).state_dict()
    assert set(ours) == set(stock)
    for name, value in stock.items():
        assert torch.equal(seg_rows(name, ours[name], value), value), name


@pytest.mark.parametrize("cls", DISTANCE_OFF, ids=lambda c: c.__name__)
def test_loss_and_gradients_are_stocks_with_the_distance_terms_off(make_trainer, cls):
    stock, ours = make_trainer(nnUNetTrainer), make_trainer(cls)
    assert_stocks_loss_and_gradients(stock, ours, fixed_batch(stock, seed=3))


def assert_stocks_loss_and_gradients(stock: nnUNetTrainer, ours, batch: dict) -> None:
    """Our trainer's loss and every gradient (segmentation rows) equal stock's on ``batch``."""
    losses = {}
    for name, trainer, loss_of in (("stock", stock, stock_loss), ("ours", ours, our_loss)):
        trainer.network.zero_grad()
        loss = loss_of(trainer, batch)
        loss.backward()
        losses[name] = float(loss.detach())
    assert losses["ours"] == pytest.approx(losses["stock"], rel=1e-5, abs=1e-6)
    assert_stocks_gradients(stock, ours)


def assert_stocks_gradients(stock: nnUNetTrainer, ours) -> float:
    """Every gradient of ours (segmentation rows) equals stock's after both ran backward; returns the
    summed |gradient| of our extra (SDM) rows of the output layers."""
    stock_params = dict(unwrap(stock.network).named_parameters())
    extra_rows = 0.0
    for name, param in unwrap(ours.network).named_parameters():
        reference = stock_params[name].grad
        if reference is None:  # the lowest deep-supervision output has weight 0 in both
            assert param.grad is None or not param.grad.any(), name
            continue
        torch.testing.assert_close(seg_rows(name, param.grad, reference), reference, rtol=1e-4, atol=1e-7)
        if ".seg_layers." in name:
            extra_rows += float(param.grad[reference.shape[0] :].abs().sum())
    return extra_rows


@pytest.mark.parametrize("cls", [FlagshipOff, DualHeadOff], ids=lambda c: c.__name__)
def test_short_training_follows_stocks_loss_curve(make_trainer, cls):
    stock, ours = make_trainer(nnUNetTrainer), make_trainer(cls)
    curves = {"stock": [], "ours": []}
    for step in range(6):
        batch = fixed_batch(stock, seed=step)
        curves["stock"].append(float(stock.train_step(batch)["loss"]))
        curves["ours"].append(float(ours.train_step(batch)["loss"]))
    assert curves["stock"][-1] < curves["stock"][0]  # it trains
    assert curves["ours"] == pytest.approx(curves["stock"], rel=1e-4, abs=1e-5)


def test_flagship_with_its_terms_on_departs_from_stock(make_trainer):
    """The parity above is not vacuous: the ramped-in distance terms change the loss and the gradients."""
    ours = make_trainer(nnUNetTrainerSDM)
    ours.current_epoch = ours.num_epochs  # past the ramp
    batch = fixed_batch(ours, seed=1)
    _, _, terms = ours.forward_and_loss(batch["data"], batch["target"])
    weights = ours.loss_term_weights()
    assert weights["l2"] == ours.sdm_weight and weights["consistency"] == ours.consistency_weight
    expected = sum(weights[name] * terms[name] for name in weights)
    torch.testing.assert_close(terms["loss"], expected)
    assert float(terms["l2"].detach()) > 0 and float(terms["consistency"].detach()) > 0


def test_detached_head_trains_the_segmentation_as_stock_and_the_sdm_rows_learn(make_trainer):
    """``_DetachedHead``: its SDM terms are in the loss, yet every shared and segmentation gradient is stock's."""
    stock, ours = make_trainer(nnUNetTrainer), make_trainer(nnUNetTrainerSDM_DetachedHead)
    ours.current_epoch = ours.num_epochs  # past any ramp: still nothing reaches the shared network
    set_sdm_trunk_gradient_scale(ours.network, ours.distance_ramp())
    batch = fixed_batch(stock, seed=2)
    stock.network.zero_grad()
    stock_loss(stock, batch).backward()
    ours.network.zero_grad()
    terms = ours.forward_and_loss(batch["data"], batch["target"])[2]
    terms["loss"].backward()
    assert float(terms["l2"].detach()) > 0 and ours.loss_term_weights()["consistency"] == 0.0
    assert assert_stocks_gradients(stock, ours) > 0  # and the SDM rows learn


def test_load_warm_start_keeps_the_segmentation_head(make_trainer, tmp_path):
    stock, ours = make_trainer(nnUNetTrainer, seed=1), make_trainer(nnUNetTrainerSDM, seed=2)
    stock_weights = unwrap(stock.network).state_dict()
    before = {k: v.clone() for k, v in unwrap(ours.network).state_dict().items()}
    fresh = load_warm_start(ours.network, stock_weights, source="stock.pth")
    after = unwrap(ours.network).state_dict()
    assert fresh == len([k for k in after if ".seg_layers." in k and k.endswith(".weight")]) * 2
    for name, value in stock_weights.items():
        assert torch.equal(seg_rows(name, after[name], value), value), name
        if ".seg_layers." in name:  # the SDM rows keep their initialisation
            assert torch.equal(after[name][value.shape[0] :], before[name][value.shape[0] :])
    other = {
        k: v[..., :1] if k.endswith("encoder.stages.0.0.convs.0.conv.weight") else v
        for k, v in stock_weights.items()
    }
    with pytest.raises(
        ValueError, match="other.pth: weight .*encoder.stages.0.0.convs.0.conv.weight has shape"
    ):
        load_warm_start(ours.network, other, source="other.pth")


def test_load_warm_start_into_an_sdm_only_network_keeps_its_output_layers(make_trainer):
    from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020

    stock, xue = make_trainer(nnUNetTrainer, seed=1), make_trainer(nnUNetTrainerSDM_Xue2020, seed=2)
    stock_weights = unwrap(stock.network).state_dict()
    before = {k: v.clone() for k, v in unwrap(xue.network).state_dict().items()}
    fresh = load_warm_start(xue.network, stock_weights, source="stock.pth")
    after = unwrap(xue.network).state_dict()
    layers = [k for k in after if ".seg_layers." in k and k.endswith(".weight")]
    assert fresh == 2 * len(layers)  # two SDM rows per output layer, all kept
    for name, value in after.items():
        expected = before[name] if ".seg_layers." in name else stock_weights[name]
        assert torch.equal(value, expected), name
