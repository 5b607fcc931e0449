"""nnUNetTrainerSDM_SemiSupervised in-process on the planned synthetic dataset (with its unlabeled cases):

- the loss of a mixed batch: stock's Dice + CE and the SDM regression on the labeled rows only, the
  consistency over labeled and unlabeled rows;
- the consistency of the unlabeled rows reaches the weights in the same optimiser step;
- batches: the plans' labeled patches (with a batch seed exactly stock's) followed by unlabeled patches;
- no preprocessed unlabeled cases: the start stops and says which command makes them.
"""

from __future__ import annotations

import math

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_sdm.losses import HeavisideConsistencyLoss
from nnunet_sdm.network import sdm_outputs, set_sdm_trunk_gradient_scale
from nnunet_sdm.training.base import UnsupportedSetupError
from nnunet_sdm.training.sdm import nnUNetTrainerSDM
from nnunet_sdm.training.seeded_batches import seed_batches
from nnunet_sdm.training.semi_supervised import (
    LabeledAndUnlabeledBatches,
    nnUNetTrainerSDM_SemiSupervised,
    sigmoid_rampup,
)
from tests.conftest import UNLABELED_CASES, synthetic_batch
from tests.training.test_seeded_batches import same_batches


def mixed_batch(trainer, unlabeled: int = 2, seed: int = 0) -> dict:
    torch.manual_seed(0)  # the labeled rows: the same in every call
    batch = synthetic_batch(trainer)
    generator = torch.Generator().manual_seed(seed)
    extra = torch.randn((unlabeled, *batch["data"].shape[1:]), generator=generator)
    return dict(batch, data=torch.cat([batch["data"], extra]), num_labeled=len(batch["data"]))


def test_supervised_terms_read_the_labeled_rows_and_the_consistency_all(make_trainer):
    trainer = make_trainer(nnUNetTrainerSDM_SemiSupervised)
    flagship = make_trainer(nnUNetTrainerSDM)
    batch = mixed_batch(trainer)
    labeled = len(batch["target"][0])
    with torch.no_grad(), sdm_outputs(trainer.network):
        outputs = trainer.network(batch["data"])
    targets = trainer.make_scale_targets(batch["target"])
    full = trainer.scale_loss(outputs[0], targets[0])
    first = type(outputs[0])(outputs[0].seg[:labeled], outputs[0].sdm[:labeled])
    alone = flagship.scale_loss(first, targets[0])
    for term in ("dice_ce", "l2", "product"):
        assert full[term].item() == pytest.approx(alone[term].item(), rel=1e-5), term
    k = trainer.heaviside_k(targets[0].spacing)
    probabilities = torch.softmax(outputs[0].seg, 1)[:, 1:]
    everywhere = HeavisideConsistencyLoss()(probabilities, outputs[0].sdm, k)
    assert full["consistency"].item() == pytest.approx(everywhere.item(), rel=1e-5)
    unlabeled = HeavisideConsistencyLoss()(probabilities[labeled:], outputs[0].sdm[labeled:], k)
    rows = len(batch["data"])
    mean_of_parts = (labeled * alone["consistency"] + (rows - labeled) * unlabeled) / rows
    assert full["consistency"].item() == pytest.approx(mean_of_parts.item(), rel=1e-5)


def weights_after_one_step(make_trainer, batch: dict, consistency_weight: float) -> torch.Tensor:
    cls = type("Variant", (nnUNetTrainerSDM_SemiSupervised,), {"consistency_weight": consistency_weight})
    trainer = make_trainer(cls, seed=0)
    trainer.current_epoch = trainer.num_epochs  # the ramps at full weight
    set_sdm_trunk_gradient_scale(trainer.network, 1.0)
    trainer.train_step(batch)
    return torch.cat([p.detach().flatten() for p in trainer.network.parameters()])


def test_the_unlabeled_consistency_reaches_the_weights_in_the_same_step(make_trainer):
    probe = make_trainer(nnUNetTrainerSDM_SemiSupervised)
    first, second = mixed_batch(probe, seed=1), mixed_batch(probe, seed=2)  # other unlabeled patches
    assert torch.equal(first["data"][:2], second["data"][:2])
    with_first = weights_after_one_step(make_trainer, first, 1.0)
    with_second = weights_after_one_step(make_trainer, second, 1.0)
    assert not torch.equal(with_first, with_second)  # the unlabeled rows moved the weights
    # without the consistency the unlabeled rows have no say (instance norm: rows do not mix)
    assert torch.equal(
        weights_after_one_step(make_trainer, first, 0.0), weights_after_one_step(make_trainer, second, 0.0)
    )


def test_consistency_follows_dtcs_sigmoid_ramp(make_trainer):
    trainer = make_trainer(nnUNetTrainerSDM_SemiSupervised)
    trainer.num_epochs = 10
    ramps = []
    for epoch in (0, 5, 10):
        trainer.current_epoch = epoch
        ramps.append(trainer.loss_term_weights()["consistency"])
    assert ramps == pytest.approx([sigmoid_rampup(0.0), sigmoid_rampup(0.5), 1.0])
    assert ramps[0] == pytest.approx(0.006738, rel=1e-3)  # exp(-5)


def test_batches_are_stocks_labeled_patches_then_unlabeled_ones(make_trainer, monkeypatch, planned_synthetic):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    stock = seed_batches(make_trainer(nnUNetTrainer), 5)
    stock_train, stock_val = stock.get_dataloaders()
    semi = seed_batches(make_trainer(nnUNetTrainerSDM_SemiSupervised), 5)
    train, val = semi.get_dataloaders()
    mixed = LabeledAndUnlabeledBatches(train, semi.unlabeled_augmenter())
    for _ in range(3):
        expected, batch = next(stock_train), next(mixed)
        labeled = batch["num_labeled"]
        assert labeled == semi.batch_size and len(batch["data"]) == labeled + semi.unlabeled_batch_size
        assert same_batches(
            [expected], [dict(batch, data=batch["data"][:labeled], keys=batch["keys"][:labeled])]
        )
        assert set(batch["keys"][labeled:]) <= set(planned_synthetic["unlabeled_cases"])
        assert batch["data"].shape[1:] == expected["data"].shape[1:]
    assert len(planned_synthetic["unlabeled_cases"]) == UNLABELED_CASES


def test_without_preprocessed_unlabeled_cases_the_start_names_the_command(make_trainer, tmp_path):
    trainer = make_trainer(nnUNetTrainerSDM_SemiSupervised)
    trainer.preprocessed_dataset_folder_base = str(tmp_path)
    with pytest.raises(
        UnsupportedSetupError,
        match=r"no preprocessed unlabeled cases in .*nnunet-sdm preprocess-unlabeled -d",
    ):
        trainer.on_train_start()


@pytest.mark.parametrize("kind", ["regions", "ignore", "regions+ignore"])
def test_mixed_batches_on_region_and_sparse_datasets(make_trainer, kind):
    """Regions (sigmoid consistency) and the ignore label (certified SDM voxels): the labeled rows' terms are
    the flagship's, the consistency is finite over all rows, and the step updates the weights."""
    from tests.training.test_dataset_kinds import KINDS, batch_of

    trainer = make_trainer(nnUNetTrainerSDM_SemiSupervised, labels=KINDS[kind])
    flagship = make_trainer(nnUNetTrainerSDM, labels=KINDS[kind])
    batch = batch_of(trainer, seed=4, kind=kind)
    labeled = len(batch["data"])
    batch = dict(batch, data=torch.cat([batch["data"], torch.randn_like(batch["data"])]), num_labeled=labeled)
    with torch.no_grad(), sdm_outputs(trainer.network):
        outputs = trainer.network(batch["data"])
    targets = trainer.make_scale_targets(batch["target"])
    full = trainer.scale_loss(outputs[0], targets[0])
    alone = flagship.scale_loss(
        type(outputs[0])(outputs[0].seg[:labeled], outputs[0].sdm[:labeled]), targets[0]
    )
    for term in ("dice_ce", "l2", "product"):
        assert full[term].item() == pytest.approx(alone[term].item(), rel=1e-5), term
    assert torch.isfinite(full["consistency"])
    trainer.current_epoch = trainer.num_epochs
    before = [p.detach().clone() for p in trainer.network.parameters()]
    terms = trainer.train_step(batch)
    assert all(math.isfinite(float(v)) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))
