"""nnU-Net's own segmentation losses, configured as ``nnUNetTrainer._build_loss`` configures them, for the
trainers that keep nnU-Net's segmentation head and loss next to their distance terms."""

from __future__ import annotations

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import nn


def nnunet_dice_ce_loss(trainer: nnUNetTrainer) -> nn.Module:
    """nnU-Net's segmentation loss, built exactly as ``nnUNetTrainer._build_loss`` (before its
    deep-supervision wrapper): Dice + CE for label maps (target (B, 1, *spatial), ignore label masked),
    Dice + BCE for regions (target (B, R [+ 1 ignore channel], *spatial))."""
    manager = trainer.label_manager
    dice_kwargs = {
        "batch_dice": trainer.configuration_manager.batch_dice,
        "smooth": 1e-5,
        "ddp": trainer.is_ddp,
    }
    if manager.has_regions:
        loss = DC_and_BCE_loss(
            {},
            {**dice_kwargs, "do_bg": True},
            use_ignore_label=manager.ignore_label is not None,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
    else:
        loss = DC_and_CE_loss(
            {**dice_kwargs, "do_bg": False},
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=manager.ignore_label,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
    if trainer._do_i_compile():
        loss.dc = torch.compile(loss.dc)
    return loss


class NNUNetSoftDice(nn.Module):
    """nnU-Net's soft Dice term alone, as the ``dc`` of ``DC_and_CE_loss`` / ``DC_and_BCE_loss`` computes
    it from the loader's target: softmax and foreground classes for label maps, sigmoid and every
    region for regions; ignore-label voxels masked out as those losses do. Value: -mean soft Dice."""

    def __init__(self, dice: nn.Module, regions: bool, ignore_label: int | None) -> None:
        super().__init__()
        self.dc = dice
        self.regions = regions
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.ignore_label is not None:
            if self.regions:
                mask, target = ~target[:, -1:].bool(), target[:, :-1]
            else:
                mask = target != self.ignore_label
                target = torch.where(mask, target, 0)
        return self.dc(logits, target, loss_mask=mask)


def nnunet_soft_dice_loss(trainer: nnUNetTrainer) -> nn.Module:
    """nnU-Net's soft Dice alone (the ``dc`` of ``nnunet_dice_ce_loss``), see :class:`NNUNetSoftDice`."""
    regions = trainer.label_manager.has_regions
    dice = MemoryEfficientSoftDiceLoss(
        apply_nonlin=torch.sigmoid if regions else softmax_helper_dim1,
        batch_dice=trainer.configuration_manager.batch_dice,
        do_bg=regions,
        smooth=1e-5,
        ddp=trainer.is_ddp,
    )
    dice = torch.compile(dice) if trainer._do_i_compile() else dice
    return NNUNetSoftDice(dice, regions, trainer.label_manager.ignore_label)
