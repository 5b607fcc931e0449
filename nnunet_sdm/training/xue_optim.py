"""Xue et al. (AAAI 2020)'s optimiser for the SDM trainer: Adam, lr 5e-4, times 0.8 every 25 epochs.

``nnUNetTrainerSDM_Xue2020Adam`` is :class:`nnunet_sdm.training.xue.nnUNetTrainerSDM_Xue2020` (eq. 5) with that
optimiser instead of nnU-Net's SGD (Nesterov, momentum 0.99, lr 1e-2, poly decay). Pair it with the
``xue2020_deep_unet`` plans override for the paper's backbone.

Choices the paper leaves open:
- no weight decay (the paper names none; nnU-Net's SGD uses 3e-5);
- an "epoch" is nnU-Net's (``num_iterations_per_epoch`` = 250 iterations), not a pass over the data;
- nnU-Net's 1000 epochs are kept (the paper trains 200 or 600 of its epochs): subclass and set
  ``num_epochs`` in ``__init__`` as nnU-Net's own variants do.
The step is counted as nnU-Net counts: ``on_train_epoch_start`` calls
``lr_scheduler.step(current_epoch)``, so the rate depends on the epoch number only and a continued
training (``--c``) resumes with the right rate.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import _LRScheduler

from nnunet_sdm.checks import (
    check_integer,
    check_number,
    check_positive,
    integer,
    non_negative,
    number,
    positive,
)
from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020

XUE_ADAM_LR = 5e-4
XUE_LR_GAMMA = 0.8
XUE_LR_STEP_EPOCHS = 25


class StepDecayLRScheduler(_LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_epochs), set by ``step(epoch)`` as nnU-Net calls it.

    ``step()`` without an epoch counts calls itself (like nnU-Net's ``PolyLRScheduler``).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        initial_lr: float,
        step_epochs: int = XUE_LR_STEP_EPOCHS,
        gamma: float = XUE_LR_GAMMA,
        current_step: int | None = None,
    ) -> None:
        check_positive("initial_lr", initial_lr)
        check_integer("step_epochs", step_epochs)
        check_number("gamma", gamma, minimum=0.0, maximum=1.0, above=True)
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.step_epochs = step_epochs
        self.gamma = gamma
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, epoch: int) -> float:
        return self.initial_lr * self.gamma ** (max(int(epoch), 0) // self.step_epochs)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr


class nnUNetTrainerSDM_Xue2020Adam(nnUNetTrainerSDM_Xue2020):
    """Xue et al. 2020, eq. 5, with the paper's optimiser: Adam, lr 5e-4, x0.8 every 25 epochs."""

    adam_lr: float = XUE_ADAM_LR
    adam_weight_decay: float = 0.0
    lr_gamma: float = XUE_LR_GAMMA
    lr_step_epochs: int = XUE_LR_STEP_EPOCHS

    def init_trainer_state(self) -> None:
        super().init_trainer_state()
        self.initial_lr = self.adam_lr  # nnU-Net sets its 1e-2 in __init__; logged and used below

    setting_rules = {
        "adam_lr": positive,
        "adam_weight_decay": non_negative,
        "lr_gamma": number(minimum=0.0, maximum=1.0, above=True),
        "lr_step_epochs": integer(1),
    }

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.network.parameters(), lr=self.initial_lr, weight_decay=self.adam_weight_decay
        )
        scheduler = StepDecayLRScheduler(optimizer, self.initial_lr, self.lr_step_epochs, self.lr_gamma)
        return optimizer, scheduler
