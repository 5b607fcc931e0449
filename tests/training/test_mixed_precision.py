"""Mixed precision as on a GPU, run on the CPU: bf16 autocast and nnU-Net's GradScaler branch of the train
step (``torch.amp.GradScaler`` works on the CPU, so the branch that a CUDA run takes is exercised as is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_sdm.network import sdm_outputs, unwrap
from nnunet_sdm.training.sdm import nnUNetTrainerSDM
from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020
from tests.conftest import synthetic_batch


def mixed_precision(trainer) -> None:
    """What nnU-Net sets up on CUDA (autocast + GradScaler), with the CPU's bf16 autocast."""
    trainer._autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    trainer.grad_scaler = torch.amp.GradScaler("cpu")


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in unwrap(trainer.network).state_dict().items()}


@pytest.mark.parametrize("cls", [nnUNetTrainerSDM, nnUNetTrainerSDM_Xue2020])
def test_autocast_and_grad_scaler_train_like_full_precision(make_trainer, cls):
    batch = synthetic_batch(make_trainer(cls))
    full = make_trainer(cls)
    amp = make_trainer(cls)
    mixed_precision(amp)
    with amp._autocast(), sdm_outputs(amp.network):
        output = amp.network(batch["data"])[0]
    assert output.sdm.dtype == torch.bfloat16  # autocast is on in the forward pass
    reference = full.train_step(batch)
    before = weights(amp)
    terms = amp.train_step(batch)
    assert set(terms) == set(reference)
    for name, value in terms.items():
        assert np.isfinite(value).all()
        assert float(value) == pytest.approx(float(reference[name]), rel=0.05, abs=2e-3), name
    after = weights(amp)
    assert not all(torch.equal(before[k], after[k]) for k in before), "the scaler's step did not update"
    for _ in range(3):
        assert np.isfinite(amp.train_step(batch)["loss"]).all()


def test_grad_scaler_skips_a_non_finite_step_and_it_is_counted(make_trainer):
    trainer = make_trainer(nnUNetTrainerSDM)
    mixed_precision(trainer)
    trainer.train_step(synthetic_batch(trainer))
    before, scale = weights(trainer), trainer.grad_scaler.get_scale()
    trainer.train_step(synthetic_batch(trainer, poison=True))
    after = weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.grad_scaler.get_scale() < scale  # the scaler backed off, as in stock's AMP
    assert trainer.non_finite_in_a_row == 1 and trainer.non_finite_steps_this_epoch == 1
    trainer.train_step(synthetic_batch(trainer))
    assert trainer.non_finite_in_a_row == 0
