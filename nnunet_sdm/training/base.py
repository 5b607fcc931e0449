"""The nnU-Net plumbing of every distance-map trainer, written once.

:class:`nnUNetTrainerDistanceBase` subclasses nnU-Net's ``nnUNetTrainer`` and overrides its hooks only:

- the network (``build_network_architecture``): nnU-Net's network from the plans with extra output
  channels, wrapped in :class:`~nnunet_sdm.network.SDMHeadNetwork`, which gives the predictor plain
  segmentation logits and the trainer both heads;
- targets: for every deep-supervision scale, from that scale's augmented labels, on the training device
  in the train step, the method's distance map (``distance_target``; by default the SDM in mm with
  that scale's spacing, normalised by ``normalise_sdm``);
- the loss: one per-scale loss (``scale_loss``, per paper) combined with nnU-Net's deep-supervision
  weights, returning each term so that the log shows them;
- ``train_step`` / ``validation_step``: nnU-Net's, with the head switch and the extra terms;
- start-up checks of the dataset layout and of the trainer's settings.

Each paper's module defines only its class attributes, its loss and, where needed, its targets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context, softmax_helper_dim1
from torch import autocast, nn
from torch import distributed as dist

from nnunet_sdm.checks import Rule, integer, one_of, optional, positive
from nnunet_sdm.distance import normalise_xue, signed_distance, truncated_signed_distance
from nnunet_sdm.losses import deep_supervision_weights, weighted_terms
from nnunet_sdm.network import SDMHeadNetwork, SDMOutput, add_output_channels, sdm_outputs, unwrap
from nnunet_sdm.plots import loss_terms_plot


# ---- nnU-Net's own losses, configured as nnUNetTrainer._build_loss does for label datasets -------------
def nnunet_dice_ce_loss(trainer: nnUNetTrainer) -> DC_and_CE_loss:
    """nnU-Net's Dice + CE for label maps: target (B, 1, *spatial); value CE - soft Dice (foreground)."""
    loss = DC_and_CE_loss(
        {
            "batch_dice": trainer.configuration_manager.batch_dice,
            "smooth": 1e-5,
            "do_bg": False,
            "ddp": trainer.is_ddp,
        },
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=trainer.label_manager.ignore_label,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    if trainer._do_i_compile():
        loss.dc = torch.compile(loss.dc)
    return loss


def nnunet_soft_dice_loss(trainer: nnUNetTrainer) -> nn.Module:
    """nnU-Net's soft Dice alone (the ``dc`` of ``nnunet_dice_ce_loss``): -mean foreground soft Dice."""
    dice = MemoryEfficientSoftDiceLoss(
        apply_nonlin=softmax_helper_dim1,
        batch_dice=trainer.configuration_manager.batch_dice,
        do_bg=False,
        smooth=1e-5,
        ddp=trainer.is_ddp,
    )
    return torch.compile(dice) if trainer._do_i_compile() else dice


def term_gradient_norms_of(
    network: nn.Module,
    terms: dict[str, torch.Tensor],
    weights: dict[str, float],
    grad_scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Gradient norm over all trainable weights of every loss term (``grad_norm/<term>``, ``loss`` the
    total), whether the total's exceeds nnU-Net's clipping at 12 (``grad_norm/clipped``), and each term's
    share of the total's (``grad_share/<term>`` = weight x term norm / total norm, for the terms that
    ``weights`` lists). Terms of a weighted sum need not have shares that add up to 1 (their gradients
    need not point the same way). The network's ``.grad`` fields are left untouched.
    """
    parameters = [p for p in network.parameters() if p.requires_grad]
    scale = float(grad_scaler.get_scale()) if grad_scaler is not None else 1.0
    norms: dict[str, float] = {}
    for name, value in terms.items():
        if not value.requires_grad:
            continue
        grads = torch.autograd.grad(value * scale, parameters, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().square().sum() for g in grads if g is not None]
        norms[name] = float(torch.stack(squares).sum().sqrt()) / scale if squares else 0.0
    diagnostics = {f"grad_norm/{name}": value for name, value in norms.items()}
    total = norms.get("loss", 0.0)
    if total > 0:
        diagnostics["grad_norm/clipped"] = float(total > 12)
        for name, weight in weights.items():
            if name in norms:
                diagnostics[f"grad_share/{name}"] = weight * norms[name] / total
    return diagnostics


def terms_to_host(terms: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The loss terms as numpy scalars, read back from the device in one copy (one host sync, where stock
    nnU-Net reads its loss back)."""
    values = torch.stack([value.detach().float() for value in terms.values()]).cpu().numpy()
    return dict(zip(terms, values))


# Budget overrides for smoke tests and CPU runs through the real `nnUNetv2_train` command.
BUDGET_ENV = {
    "num_epochs": "nnUNetSDM_num_epochs",
    "num_iterations_per_epoch": "nnUNetSDM_iterations_per_epoch",
    "num_val_iterations_per_epoch": "nnUNetSDM_val_iterations_per_epoch",
    "save_every": "nnUNetSDM_save_every",  # checkpoint_latest.pth every N epochs (nnU-Net: 50)
}


class UnsupportedSetupError(RuntimeError):
    """A dataset layout or a setting that this trainer cannot train on (raised at start-up)."""


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or inf in too many steps in a row; training stopped before updating the weights."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (truncated, foreign, or of another trainer)."""


CHECKPOINT_EXTRAS_KEY = "nnunet_sdm"


@dataclass
class ScaleTarget:
    """Targets of one deep-supervision scale, all on the training device."""

    labels: torch.Tensor  # (B, *spatial) int64 label map
    classes: tuple[int, ...]  # the foreground labels, one channel each in ``onehot`` and ``distance``
    spacing: tuple[float, ...]  # mm per voxel at this scale
    distance: torch.Tensor | None = None  # (B, K or 1, *spatial) the method's distance target, if any

    @cached_property
    def onehot(self) -> torch.Tensor:
        """(B, K, *spatial) float, one channel per foreground label; made only for losses that use it."""
        return torch.stack([self.labels == c for c in self.classes], dim=1).float()


class nnUNetTrainerDistanceBase(nnUNetTrainer):
    """Shared base of the nnunet-sdm trainers (not a trainer to run by itself)."""

    #: the network has nnU-Net's segmentation head (num_segmentation_heads logits)
    has_segmentation_head: bool = False
    #: the network has an SDM head (one tanh channel per foreground class)
    has_sdm_head: bool = True
    #: the loss needs a distance target (``distance_target``) at every scale
    uses_distance_targets: bool = True
    #: SDM targets truncated at this many mm, ``clamp(sdm / tau, -1, 1)`` (None: the full map, normalised
    #: by ``normalise_sdm``)
    truncation_mm: float | None = None
    #: backend of the SDM targets (``nnunet_sdm.distance``): "auto" is the exact torch transform on an
    #: accelerator (no host sync, see ``distance/_edt_torch.py``) and for truncated targets on the CPU,
    #: ``edt`` for full maps on the CPU
    sdm_backend: str = "auto"
    #: trainer attributes that environment variables may set (budgets for smoke tests and CPU runs)
    budget_environment: dict[str, str] = BUDGET_ENV
    #: the trainer's settings (class attributes) and the rule each must pass (:mod:`nnunet_sdm.checks`),
    #: checked at start-up; a subclass declares only its own, the base collects them along the MRO
    #: a non-finite loss skips the optimiser step (as stock's GradScaler does); this many in a row stop
    #: training with NonFiniteLossError
    max_non_finite_steps: int = 5
    setting_rules: ClassVar[dict[str, Rule]] = {
        "truncation_mm": optional(positive),
        "sdm_backend": one_of("auto", "edt", "torch"),
        "max_non_finite_steps": integer(1),
    }

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._check_dataset_supported()
        self.check_settings()
        #: {"train": {term: mean over the last epoch (all DDP ranks)}, "val": {...}}
        self.epoch_term_means: dict[str, dict[str, float]] = {}
        #: per-term gradient norms and shares of the epoch's first batch (``term_gradient_norms``)
        self.gradient_diagnostics: dict[str, float] = {}
        self._measure_gradients_now = False
        #: optimiser steps skipped for a non-finite loss: in a row, and in this epoch (logged at its end)
        self.non_finite_in_a_row = 0
        self.non_finite_steps_this_epoch = 0
        self._apply_budget_from_environment()
        self.init_trainer_state()

    def init_trainer_state(self) -> None:
        """Per-trainer attributes, set at the end of ``__init__`` (so that no subclass has to repeat
        nnU-Net's ``__init__`` signature, which the predictor and DDP call)."""

    # ---- start-up checks -------------------------------------------------------------------
    def _check_dataset_supported(self) -> None:
        name = type(self).__name__
        dataset = self.plans_manager.dataset_name
        if self.label_manager.has_regions:
            raise UnsupportedSetupError(
                f"{name}: dataset {dataset} is region-based (dataset.json 'regions_class_order'); "
                f"{name} trains on label maps only. Use nnUNetTrainer for region-based datasets."
            )
        if self.label_manager.has_ignore_label:
            raise UnsupportedSetupError(
                f"{name}: dataset {dataset} has an ignore label ({self.label_manager.ignore_label}); "
                f"distances to a partly unknown boundary are undefined, so {name} does not support it."
            )
        labels = [int(c) for c in self.label_manager.all_labels]
        if labels != list(range(len(labels))):
            raise UnsupportedSetupError(
                f"{name}: dataset {dataset} has labels {labels}; nnU-Net needs consecutive labels 0..N."
            )

    @classmethod
    def declared_setting_rules(cls) -> dict[str, Rule]:
        """Every ``setting_rules`` entry of this class and its bases (a subclass's rule wins)."""
        rules: dict[str, Rule] = {}
        for klass in reversed(cls.__mro__):
            rules.update(vars(klass).get("setting_rules", {}))
        return rules

    def check_settings(self) -> None:
        """Validate the declared settings (``setting_rules``), then ``check_setting_combinations``;
        any ValueError is raised again as ``<TrainerName>: <message>``."""
        try:
            for name, rule in self.declared_setting_rules().items():
                rule(name, getattr(self, name))
            self.check_setting_combinations()
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None

    def check_setting_combinations(self) -> None:
        """Constraints between settings that one rule per setting cannot say (raise ValueError)."""

    def _apply_budget_from_environment(self) -> None:
        for attribute, variable in self.budget_environment.items():
            value = os.environ.get(variable)
            if value is None:
                continue
            try:
                number = int(value)
                if number < 1:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"environment variable {variable}={value!r}: expected an integer >= 1"
                ) from None
            setattr(self, attribute, number)
            self.print_to_log_file(f"{variable}={number}: {attribute} set to {number}")

    # ---- network -----------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(
        cls,
        plans_manager,
        configuration_manager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        # Label datasets only (checked at start-up): num_output_channels = background + foreground.
        num_seg = num_output_channels if cls.has_segmentation_head else 0
        num_sdm = num_output_channels - 1 if cls.has_sdm_head else 0
        # With a segmentation head, build the stock network first (the same weights as nnUNetTrainer from
        # the same random state, segmentation rows included), then append the SDM rows.
        widen = num_seg > 0 and num_sdm > 0

        def build(channels: int) -> nn.Module:
            return get_network_from_plans(
                configuration_manager.network_arch_class_name,
                configuration_manager.network_arch_init_kwargs,
                configuration_manager.network_arch_init_kwargs_req_import,
                num_input_channels,
                channels,
                allow_init=True,
                deep_supervision=enable_deep_supervision,
            )

        backbone = build(num_seg if widen else num_seg + num_sdm)
        if widen:
            if not hasattr(getattr(backbone, "decoder", None), "seg_layers"):
                # without nnU-Net's 1x1 output layers neither the stock initialisation of the
                # segmentation rows nor the ramped SDM gradient (SplitOutputConv) can be had
                raise UnsupportedSetupError(
                    f"{cls.__name__}: the network {configuration_manager.network_arch_class_name} has no "
                    "decoder.seg_layers (nnU-Net's 1x1 output convolutions), where the SDM head's channels are "
                    "appended. Supported: dynamic_network_architectures' PlainConvUNet, ResidualEncoderUNet "
                    "and ResidualUNet (nnUNetPlans, nnUNetResEnc*Plans) and networks with the same output layers."
                )
            add_output_channels(backbone, num_sdm)
        return SDMHeadNetwork(backbone, num_seg, num_sdm)

    # ---- loss --------------------------------------------------------------------------------
    def _build_loss(self) -> nn.Module:
        return self.build_scale_loss()

    def build_scale_loss(self) -> nn.Module:
        """The per-scale loss module of the paper (stored as ``self.loss``)."""
        raise NotImplementedError

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        """Loss terms of one deep-supervision scale; must contain ``loss``."""
        raise NotImplementedError

    @cached_property
    def deep_supervision_weights(self) -> list[float]:
        if not self.enable_deep_supervision:
            return [1.0]
        # nnU-Net's DDP work-around: a zero weight leaves parameters without gradient.
        last = 1e-6 if self.is_ddp and not self._do_i_compile() else 0.0
        return deep_supervision_weights(len(self._get_deep_supervision_scales()), last_weight=last)

    # ---- targets -----------------------------------------------------------------------------
    @property
    def foreground_labels(self) -> list[int]:
        return [int(c) for c in self.label_manager.foreground_labels]

    def scale_spacing(self, full_shape, scale_shape) -> tuple[float, ...]:
        """Voxel spacing (mm) of a deep-supervision scale, from the configuration's spacing."""
        spacing = self.configuration_manager.spacing[-len(full_shape) :]
        return tuple(float(s) * f / d for s, f, d in zip(spacing, full_shape, scale_shape))

    def normalise_sdm(self, sdm_mm: torch.Tensor, spatial_dims: int) -> torch.Tensor:
        """Normalisation of the full SDM target; Xue et al.: per sample and class to [-1, 1]."""
        return normalise_xue(sdm_mm, spatial_dims=spatial_dims)

    def distance_target(self, labels: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
        """The method's distance map of one scale's labels (B, *spatial) -> (B, K or 1, *spatial).

        Default: per foreground class, the SDM truncated at ``truncation_mm`` (``clamp(sdm / tau, -1, 1)``,
        computed in its band only, stored in float16: values in [-1, 1] to 2.5e-4) if that is set, else
        the exact SDM in mm normalised by ``normalise_sdm``.
        """
        classes, backend = self.foreground_labels, self.sdm_backend
        if self.truncation_mm is not None:
            target = truncated_signed_distance(labels, spacing, classes, self.truncation_mm, backend=backend)
            return target.to(torch.float16)
        return self.normalise_sdm(signed_distance(labels, spacing, classes, backend=backend), len(spacing))

    def needs_distance_target(self, full_resolution: bool) -> bool:
        """Whether a scale's loss uses ``distance_target`` (all scales by default)."""
        return self.uses_distance_targets

    def make_scale_target(self, target: torch.Tensor, full_shape) -> ScaleTarget:
        labels = target[:, 0].long()
        spacing = self.scale_spacing(full_shape, labels.shape[1:])
        distance = None
        with torch.no_grad():
            if target.shape[1] > 1:  # made in the data-loader workers (SDMTargetTransform)
                distance = target[:, 1:].float()
            elif self.needs_distance_target(tuple(labels.shape[1:]) == tuple(full_shape)):
                distance = self.distance_target(labels, spacing)
        return ScaleTarget(labels, tuple(self.foreground_labels), spacing, distance)

    def make_scale_targets(self, targets: list[torch.Tensor]) -> dict[int, ScaleTarget]:
        """The targets of every deep-supervision scale that has a weight, keyed by scale."""
        full_shape = targets[0].shape[2:]
        weights = self.deep_supervision_weights[: len(targets)]
        return {i: self.make_scale_target(targets[i], full_shape) for i, w in enumerate(weights) if w != 0}

    # ---- steps -------------------------------------------------------------------------------
    def _autocast(self):
        # as nnU-Net: autocast on CUDA only (slow on CPU, unsupported on mps)
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def _to_device(self, batch: dict):
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        targets = target if isinstance(target, list) else [target]
        return data, [t.to(self.device, non_blocking=True) for t in targets]

    def forward_and_loss(self, data: torch.Tensor, targets: list[torch.Tensor]):
        """Network outputs and loss terms; targets are made only for scales that have a weight.

        The targets are made BEFORE the forward pass: the distance transforms' temporaries then come
        and go while the network's activations do not exist yet, instead of adding to their peak.
        """
        scale_targets = self.make_scale_targets(targets)
        with sdm_outputs(self.network):
            outputs = self.network(data)
        if not isinstance(outputs, list):
            outputs = [outputs]
        terms = weighted_terms(
            lambda i: self.scale_loss(outputs[i], scale_targets[i]),
            self.deep_supervision_weights[: len(outputs)],
        )
        return outputs, scale_targets, terms

    def train_step(self, batch: dict) -> dict:
        data, targets = self._to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            _, _, terms = self.forward_and_loss(data, targets)
        loss = terms["loss"]
        finite = self._all_finite(terms)
        if self._measure_gradients_now:
            self._measure_gradients_now = False
            self.gradient_diagnostics = self.term_gradient_norms(terms)
        if self.grad_scaler is not None:
            # stock's AMP step: the scaler skips the update itself when the gradients are not finite
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
            self._count_non_finite(finite, terms, batch.get("keys"))
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            # read the flag where stock reads the loss back anyway; skip the update as the scaler would
            if self._count_non_finite(finite, terms, batch.get("keys")):
                self.optimizer.step()
        return terms_to_host(terms)

    # ---- gradient diagnostics ------------------------------------------------------------------
    def loss_term_weights(self) -> dict[str, float]:
        """Weight of each returned loss term in ``loss`` (for the gradient shares); {} if not declared."""
        return {}

    def term_gradient_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """:func:`term_gradient_norms_of` this trainer's network and declared term weights.

        One extra backward pass per term, so it runs on the first batch of every epoch only.
        """
        return term_gradient_norms_of(self.network, terms, self.loss_term_weights(), self.grad_scaler)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        # DDP's reducer expects one backward per forward: no extra gradient passes there
        self._measure_gradients_now = not self.is_ddp
        self.gradient_diagnostics = {}
        self.non_finite_steps_this_epoch = 0

    def _all_finite(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """A 0-d bool tensor: every loss term is finite on every DDP rank (no host sync)."""
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in terms.values()]).all()
        if self.is_ddp:  # every rank must skip the same steps, or the replicas drift apart
            flag = finite.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        return finite

    def _count_non_finite(self, finite: torch.Tensor, terms: dict[str, torch.Tensor], keys) -> bool:
        """Whether the step's loss was finite; a non-finite one is logged and counted, and the
        ``max_non_finite_steps``-th in a row stops training with :class:`NonFiniteLossError`.

        As stock's GradScaler does for AMP, a step whose loss is NaN or inf updates no weight (the caller
        skips the optimiser step) and training goes on; only a run of them stops it, leaving the
        checkpoints on disk as they are (nnU-Net's ``checkpoint_latest.pth`` / ``checkpoint_best.pth``),
        so ``--c`` resumes from the last good one.
        """
        if bool(finite):
            self.non_finite_in_a_row = 0
            return True
        self.non_finite_in_a_row += 1
        self.non_finite_steps_this_epoch += 1
        bad = {
            name: float(v.detach().float().mean()) for name, v in terms.items() if not torch.isfinite(v).all()
        }
        where = (
            f"at epoch {self.current_epoch} ({', '.join(f'{k} = {v}' for k, v in bad.items())}; "
            f"cases {list(keys) if keys is not None else '?'})"
        )
        if self.non_finite_in_a_row < self.max_non_finite_steps:
            self.print_to_log_file(
                f"non-finite loss {where}: optimiser step skipped, weights unchanged "
                f"({self.non_finite_in_a_row} in a row; training stops at {self.max_non_finite_steps})"
            )
            return False
        kept = [
            f
            for f in ("checkpoint_latest.pth", "checkpoint_best.pth")
            if os.path.isfile(os.path.join(self.output_folder, f))
        ]
        message = (
            f"{type(self).__name__}: non-finite loss {where}, {self.non_finite_in_a_row} steps in a row. "
            f"Training stopped before updating the weights. Checkpoints kept in {self.output_folder}: "
            f"{kept or 'none yet'}; resume with --c (consider a lower learning rate)."
        )
        self.print_to_log_file(message)
        raise NonFiniteLossError(message)

    def validation_step(self, batch: dict) -> dict:
        data, targets = self._to_device(batch)
        with self._autocast():
            outputs, scale_targets, terms = self.forward_and_loss(data, targets)
        # pseudo Dice of the full-resolution output, as nnU-Net computes it
        logits = unwrap(self.network).logits(outputs[0])
        target = (
            scale_targets[0] if 0 in scale_targets else self.make_scale_target(targets[0], data.shape[2:])
        )
        predicted = logits.argmax(1)
        predicted_onehot = torch.stack([predicted == c for c in self.foreground_labels], 1).float()
        axes = (0, *range(2, predicted_onehot.ndim))
        tp = (predicted_onehot * target.onehot).sum(axes)
        fp = (predicted_onehot * (1 - target.onehot)).sum(axes)
        fn = ((1 - predicted_onehot) * target.onehot).sum(axes)
        result = terms_to_host(terms)
        result.update(tp_hard=tp.cpu().numpy(), fp_hard=fp.cpu().numpy(), fn_hard=fn.cpu().numpy())
        return result

    # ---- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        """Trainer state beyond nnU-Net's (e.g. a frozen auxiliary network), stored in every checkpoint."""
        return {}

    def load_checkpoint_extras(self, extras: dict, source: str) -> None:
        """Restore what :meth:`checkpoint_extras` stored (resuming with ``--c``); ``source`` names the file."""

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net's checkpoint, with this project's extras under one more key
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": unwrap(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            CHECKPOINT_EXTRAS_KEY: self.checkpoint_extras(),
        }
        torch.save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError(f"{type(self).__name__}.load_checkpoint takes a file name")
        filename = filename_or_checkpoint
        try:
            checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated file, not a torch file, ...
            raise CheckpointError(
                f"{filename}: cannot be read as a checkpoint ({type(e).__name__}: {e}); it may be truncated "
                f"(a run killed while saving). Delete it to resume from another checkpoint or start anew."
            ) from None
        expected = {"network_weights", "optimizer_state", "current_epoch", "trainer_name"}
        if not isinstance(checkpoint, dict) or not expected <= set(checkpoint):
            raise CheckpointError(
                f"{filename}: not an nnU-Net training checkpoint (needs keys {sorted(expected)})"
            )
        if checkpoint["trainer_name"] != type(self).__name__:
            raise CheckpointError(
                f"{filename}: written by trainer {checkpoint['trainer_name']}, not {type(self).__name__}; "
                f"use -pretrained_weights to start a {type(self).__name__} training from it"
            )
        super().load_checkpoint(filename)
        self.load_checkpoint_extras(checkpoint.get(CHECKPOINT_EXTRAS_KEY, {}), os.path.basename(filename))

    # ---- logging of the loss terms ---------------------------------------------------------------
    @property
    def _loss_terms_file(self) -> str:
        return os.path.join(self.output_folder, "loss_terms.json")

    def _load_loss_terms(self) -> dict[str, dict[str, float]]:
        """{"train/dice": {"0": value, ...}, ...}; kept across --c resumes in the output folder."""
        try:
            with open(self._loss_terms_file) as handle:
                return json.load(handle)
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _log_terms(self, outputs: list[dict], phase: str, extra: dict[str, float] | None = None) -> None:
        collated = collate_outputs(outputs)
        names = [k for k in collated if k != "loss" and not k.endswith("_hard")]
        means = dict(extra or {})
        for name in names:
            value = float(np.mean(collated[name]))
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, value)
                value = float(np.mean(gathered))
            means[name] = value
        self.epoch_term_means[phase] = means
        if not means:
            return
        self.print_to_log_file(
            f"{phase} loss terms: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(means.items()))
        )
        if self.local_rank == 0:
            history = self._load_loss_terms()
            for name, value in means.items():
                history.setdefault(f"{phase}/{name}", {})[str(self.current_epoch)] = value
            with open(self._loss_terms_file, "w") as handle:
                json.dump(history, handle, indent=1)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.local_rank == 0:
            loss_terms_plot(self._load_loss_terms(), os.path.join(self.output_folder, "loss_terms.png"))

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        self._log_terms(train_outputs, "train", self.gradient_diagnostics)
        if self.non_finite_steps_this_epoch:
            self.print_to_log_file(
                f"{self.non_finite_steps_this_epoch} optimiser step(s) skipped this epoch (non-finite loss)"
            )

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        self._log_terms(val_outputs, "val")
