"""Wang & Zhang, Calivá et al., boundary-loss and HD-loss trainers: settings, loss composition in the
trainer, and a CPU run through nnU-Net's real ``nnUNetv2_train`` / ``nnUNetv2_predict`` commands."""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nnunet_sdm.distance import signed_distance, truncate
from nnunet_sdm.training.baselines import nnUNetTrainerBoundary, nnUNetTrainerHD
from nnunet_sdm.training.caliva import nnUNetTrainerDistPenaltyCE, nnUNetTrainerDistPenaltyDiceCE
from nnunet_sdm.training.wang_zhang import nnUNetTrainerSDMDualHead
from tests.conftest import nnunet_bin, predict_and_check, run, smoke_budget, synthetic_batch, training_log

PLANS = "nnUNetPlans_cpu_small"
BUDGET = smoke_budget()
# trainer -> loss terms its training log must show
TRAINERS = {
    "nnUNetTrainerSDM": ("dice_ce", "l2", "product", "consistency"),
    "nnUNetTrainerSDMDualHead": ("dice_ce", "l2"),
    "nnUNetTrainerDistPenaltyCE": ("penalised_ce",),
    "nnUNetTrainerDistPenaltyDiceCE": ("dice", "penalised_ce"),
    "nnUNetTrainerBoundary": ("dice", "boundary"),
    "nnUNetTrainerHD": ("dice_ce", "hd"),
}


# ---- settings (no nnU-Net run needed) -----------------------------------------------------------------
@pytest.mark.parametrize(
    "base, setting, value",
    [
        (nnUNetTrainerSDMDualHead, "sdm_head_weight", -1.0),
        (nnUNetTrainerDistPenaltyCE, "penalised_ce_weight", float("nan")),
        (nnUNetTrainerDistPenaltyDiceCE, "dice_weight", -0.5),
        (nnUNetTrainerBoundary, "boundary_alpha_floor", 2.0),
        (nnUNetTrainerBoundary, "boundary_alpha_step", -0.01),
        (nnUNetTrainerHD, "hd_alpha", 0.0),
        (nnUNetTrainerHD, "hd_lambda", -1.0),
    ],
)
def test_invalid_settings_are_named(base, setting, value):
    bad = type("Bad", (base,), {setting: value})
    with pytest.raises(ValueError, match=setting):
        object.__new__(bad).check_settings()


def test_heads_and_targets_flags():
    assert nnUNetTrainerSDMDualHead.has_segmentation_head and nnUNetTrainerSDMDualHead.has_sdm_head
    for cls in (
        nnUNetTrainerDistPenaltyCE,
        nnUNetTrainerDistPenaltyDiceCE,
        nnUNetTrainerBoundary,
        nnUNetTrainerHD,
    ):
        assert cls.has_segmentation_head and not cls.has_sdm_head and cls.uses_distance_targets


def test_karimi_lambda_is_the_ratio_of_means():
    # nnU-Net's Dice + CE mean -0.5 -> 1 + (-0.5) = 0.5; HD mean 2 -> lambda 0.25
    assert nnUNetTrainerHD.karimi_lambda(-0.5, 2.0) == pytest.approx(0.25)
    assert nnUNetTrainerHD.karimi_lambda(0.3, 0.0) is None
    assert nnUNetTrainerHD.karimi_lambda(0.3, float("nan")) is None


# ---- the trainers in-process on the planned synthetic dataset --------------------------------------------
@contextmanager
def environment(env: dict):
    old = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def make_trainer(planned, name: str, fold: int):
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args("990", "3d_fullres", fold, name, PLANS, device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def synthetic_batch_without_class_2_in_sample_1(trainer):
    """Random image and a label map with one box per class (sample 1: no class 2), at every scale."""
    labels = torch.zeros(2, 1, *[int(p) for p in trainer.configuration_manager.patch_size])
    labels[0, 0, 2:8, 4:20, 6:30] = 1
    labels[0, 0, 8:12, 20:30, 20:28] = 2
    labels[1, 0, 3:10, 10:40, 10:40] = 1
    torch.manual_seed(0)
    batch = synthetic_batch(trainer, labels)
    return batch["data"], batch["target"]


def stock_loss(trainer):
    """nnUNetTrainer._build_loss of the same trainer: nnU-Net's own Dice + CE (unwrapped)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    loss = nnUNetTrainer._build_loss(trainer)
    return loss.loss if hasattr(loss, "weight_factors") else loss


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRAINERS))
def test_loss_composition_in_the_trainer(planned_synthetic, name):
    with environment({**planned_synthetic["env"], **BUDGET}):
        trainer = make_trainer(planned_synthetic, name, fold=1)
        data, targets = synthetic_batch_without_class_2_in_sample_1(trainer)
        outputs, scale_targets, terms = trainer.forward_and_loss(data, targets)
        assert set(terms) == {"loss", *TRAINERS[name]}
        assert all(torch.isfinite(v) for v in terms.values())
        terms["loss"].backward()
        grads = [p.grad for p in trainer.network.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)

        out, target = outputs[0], scale_targets[0]
        seg = out.seg.detach()
        assert seg.shape[1] == 3  # background + 2 classes
        one = trainer.scale_loss(type(out)(seg, None if out.sdm is None else out.sdm.detach()), target)
        stock = stock_loss(trainer)
        labels = target.labels[:, None]
        if name == "nnUNetTrainerSDM":
            assert out.sdm.shape[1] == 2
            # the truncated SDM, stored as float16 (values in [-1, 1]: rounding below 2.5e-4)
            assert target.distance.dtype == torch.float16
            reference = truncate(signed_distance(target.labels, target.spacing, [1, 2]), 5.0)
            torch.testing.assert_close(target.distance.float(), reference, rtol=0, atol=2.5e-4)
            assert torch.allclose(one["dice_ce"], stock(seg, labels))
            # epoch 0: ramp at 0, so no consistency term (the SDM head's trunk gradient is off too)
            expected = one["dice_ce"] + 0.1 * (one["l2"] + one["product"])
            assert one["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
            sdm = out.sdm.detach()
            k = math.log(19) * 5.0 / min(target.spacing)  # 0.95 one voxel from the zero level
            soft = torch.sigmoid(-k * sdm)
            assert torch.sigmoid(torch.tensor(-k * min(target.spacing) / 5.0)).item() == pytest.approx(0.05)
            consistency = (torch.softmax(seg, 1)[:, 1:] - soft).square().mean()
            assert one["consistency"].item() == pytest.approx(consistency.item(), rel=1e-5)
            assert one["l2"].item() == pytest.approx(
                2 * (sdm - target.distance).square().mean().item(), rel=1e-5
            )
            trainer.current_epoch = trainer.num_epochs  # past the ramp: full weights
            later = trainer.scale_loss(type(out)(seg, sdm), target)
            expected = one["dice_ce"] + 0.1 * (one["l2"] + one["product"]) + 0.1 * one["consistency"]
            assert later["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
        elif name == "nnUNetTrainerSDMDualHead":
            assert out.sdm.shape[1] == 2
            assert torch.allclose(one["dice_ce"], stock(seg, labels))
            l2 = (out.sdm.detach() - target.distance).square().mean()
            assert one["l2"].item() == pytest.approx(2 * l2.item(), rel=1e-5)  # summed over 2 classes
            assert one["loss"].item() == pytest.approx((one["dice_ce"] + one["l2"]).item(), rel=1e-6)
        elif name.startswith("nnUNetTrainerDistPenalty"):
            assert out.sdm is None
            phi = target.distance
            assert phi.shape == (2, 1, *target.labels.shape[1:]) and phi.device == seg.device
            assert phi.min() >= 0 and phi.max() <= 1 and phi.max() > 0
            expected = ((1 + phi[:, 0]) * F.cross_entropy(seg, target.labels, reduction="none")).mean()
            assert one["penalised_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
            if name.endswith("DiceCE"):
                assert torch.allclose(one["dice"], stock.dc(seg, labels))
                assert one["loss"].item() == pytest.approx(
                    (one["dice"] + one["penalised_ce"]).item(), rel=1e-6
                )
            else:
                assert one["loss"].item() == pytest.approx(one["penalised_ce"].item(), rel=1e-6)
        elif name == "nnUNetTrainerBoundary":
            assert torch.equal(target.distance, signed_distance(target.labels, target.spacing, [1, 2]))
            assert torch.allclose(one["dice"], stock.dc(seg, labels))
            assert one["loss"].item() == pytest.approx(one["dice"].item(), rel=1e-6)  # epoch 0: alpha 1
            assert one["boundary"] >= 0
            trainer.current_epoch = 30  # alpha 0.7
            later = trainer.scale_loss(type(out)(seg, None), target)
            assert later["loss"].item() == pytest.approx(
                0.7 * one["dice"].item() + 0.3 * one["boundary"].item(), rel=1e-5
            )
        else:  # HD
            assert torch.allclose(one["dice_ce"], stock(seg, labels))
            # first epoch: lambda = (1 + dice_ce) / hd of the batch -> loss = dice_ce + (1 + dice_ce)
            assert one["loss"].item() == pytest.approx(2 * one["dice_ce"].item() + 1, rel=1e-5)
            trainer._hd_lambda_from_epoch = 0.5
            later = trainer.scale_loss(type(out)(seg, None), target)
            assert later["loss"].item() == pytest.approx(
                one["dice_ce"].item() + 0.5 * one["hd"].item(), rel=1e-5
            )


# ---- nnU-Net's real commands ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRAINERS))
def test_train_and_predict_on_cpu(planned_synthetic, name, tmp_path):
    env = {**planned_synthetic["env"], **BUDGET}
    run(
        [nnunet_bin("nnUNetv2_train"), "990", "3d_fullres", "0", "-tr", name, "-p", PLANS, "-device", "cpu"],
        env,
    )
    results = Path(env["nnUNet_results"]) / planned_synthetic["raw"].name
    fold = results / f"{name}__{PLANS}__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()
    log = training_log(fold)
    assert "train loss terms:" in log and "val loss terms:" in log
    logged = log.split("train loss terms:")[1].splitlines()[0]
    for term in TRAINERS[name]:
        assert f" {term} " in logged
    losses = [float(v) for v in re.findall(r"(?:train|val)_loss (\S+)", log)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)

    predict_and_check(env, planned_synthetic["raw"], tmp_path / "pred", name, PLANS, "--disable_tta")
