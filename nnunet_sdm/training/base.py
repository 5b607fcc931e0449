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

Every kind of nnU-Net dataset (docs/usage.md): label maps, region-based datasets (``regions_class_order``,
BraTS-style nested regions: one sigmoid channel, one SDM and stock's Dice + BCE per region) and the
ignore label (sparse annotation: stock's losses mask it as nnU-Net does; distance targets are certified,
``certified_signed_distance``, and the distance terms count only certified voxels). A trainer whose paper
is not defined on one of them says so in ``supports_regions`` / ``supports_ignore_label`` and stops at
start-up, naming the trainers that do support it.

Each paper's module defines only its class attributes, its loss and, where needed, its targets.

Beside this module, each a part of the base: ``targets.py`` (``ScaleTarget`` and the distance targets of
every scale), ``stock_losses.py`` (nnU-Net's own losses), ``loss_terms.py`` (logging of every loss term and
their gradient shares), ``checkpoints.py`` (nnU-Net's checkpoints with the trainer's extra state).
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import ClassVar

import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch import distributed as dist

from nnunet_sdm.checks import Rule, integer, one_of, optional, positive
from nnunet_sdm.distance import label_masks
from nnunet_sdm.losses import deep_supervision_weights, weighted_terms
from nnunet_sdm.network import SDMHeadNetwork, SDMOutput, add_output_channels, sdm_outputs, unwrap
from nnunet_sdm.training.checkpoints import CHECKPOINT_EXTRAS_KEY, CheckpointError, ExtraStateCheckpoints
from nnunet_sdm.training.loss_terms import LossTermLog, term_gradient_norms_of, terms_to_host
from nnunet_sdm.training.stock_losses import NNUNetSoftDice, nnunet_dice_ce_loss, nnunet_soft_dice_loss
from nnunet_sdm.training.targets import DistanceTargets, ScaleTarget

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


#: key of the plans (written to the model folder's plans.json by nnU-Net) that tells
#: ``build_network_architecture`` -- which the predictor calls with the plans only -- that the dataset is
#: region-based, so the SDM head has one channel per region instead of one per foreground label
PLANS_KEY = "nnunet_sdm"


class nnUNetTrainerDistanceBase(LossTermLog, ExtraStateCheckpoints, DistanceTargets, nnUNetTrainer):
    """Shared base of the nnunet-sdm trainers (not a trainer to run by itself)."""

    #: the network has nnU-Net's segmentation head (num_segmentation_heads logits)
    has_segmentation_head: bool = False
    #: the network has an SDM head (one channel per foreground class)
    has_sdm_head: bool = True
    #: the SDM head's activation (``nnunet_sdm.network.SDM_ACTIVATIONS``): the papers' tanh by default
    sdm_activation: str = "tanh"
    #: the loss needs a distance target (``distance_target``) at every scale
    uses_distance_targets: bool = True
    #: the data loader delivers the distance targets as extra target channels (``SDMTargetTransform``)
    distance_targets_in_loader: bool = False
    #: dataset kinds the method is defined on; where not, why (said at start-up)
    supports_regions: bool = True
    supports_ignore_label: bool = True
    unsupported_reason: str = ""
    #: SDM targets truncated at this many mm, ``clamp(sdm / tau, -1, 1)`` (None: the full map, normalised
    #: by ``normalise_sdm``)
    truncation_mm: float | None = None
    #: backend of the SDM targets (``nnunet_sdm.distance``): "auto" is the exact torch transform on an
    #: accelerator (no host sync, see ``distance/_edt_torch.py``) and for truncated targets on the CPU,
    #: ``edt`` for full maps on the CPU
    sdm_backend: str = "auto"
    #: voxels the torch SDM transform and the chunked SDM-head loss process at once (None: their defaults,
    #: cache-sized on the CPU, large on accelerators, where each chunk costs kernel launches)
    sdm_chunk_elements: int | None = None
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
        "sdm_chunk_elements": optional(integer(1)),
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
    @classmethod
    def trainers_supporting(cls, setting: str) -> list[str]:
        """Names of the runnable trainers of this project that support ``setting`` ("supports_regions"
        or "supports_ignore_label"), for the start-up message of those that do not."""
        import importlib
        import pkgutil

        import nnunet_sdm.training as package

        for module in pkgutil.iter_modules(package.__path__):  # every paper's module defines its trainers
            importlib.import_module(f"{package.__name__}.{module.name}")
        found, stack = set(), [nnUNetTrainerDistanceBase]
        while stack:
            klass = stack.pop()
            stack.extend(klass.__subclasses__())
            if (
                klass.__name__.startswith("nnUNetTrainer")
                and "Base" not in klass.__name__
                and getattr(klass, setting)
            ):
                found.add(klass.__name__)
        return sorted(found)

    def _check_dataset_supported(self) -> None:
        name = type(self).__name__
        dataset = self.plans_manager.dataset_name
        manager = self.label_manager
        for present, setting, what in (
            (manager.has_regions, "supports_regions", "is region-based (dataset.json 'regions_class_order')"),
            (
                manager.has_ignore_label,
                "supports_ignore_label",
                f"has an ignore label ({manager.ignore_label})",
            ),
        ):
            if present and not getattr(self, setting):
                raise UnsupportedSetupError(
                    f"{name}: dataset {dataset} {what}, which {name} does not support: {self.unsupported_reason} "
                    f"Trainers that support it: nnUNetTrainer, {', '.join(self.trainers_supporting(setting))}."
                )
        labels = [int(c) for c in manager.all_labels]
        if labels != list(range(len(labels))):
            raise UnsupportedSetupError(
                f"{name}: dataset {dataset} has labels {labels}; nnU-Net needs consecutive labels 0..N."
            )
        if manager.has_regions:
            # read back by build_network_architecture, also in the predictor (plans.json of the model folder)
            self.plans_manager.plans.setdefault(PLANS_KEY, {})["region_based"] = True

    @property
    def region_based(self) -> bool:
        return self.label_manager.has_regions

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
        # label maps: num_output_channels = background + foreground labels, one SDM per foreground label;
        # regions (flagged in the plans at start-up): one sigmoid channel and one SDM per region
        region_based = bool(plans_manager.plans.get(PLANS_KEY, {}).get("region_based", False))
        num_seg = num_output_channels if cls.has_segmentation_head else 0
        num_sdm = (
            (num_output_channels if region_based else num_output_channels - 1) if cls.has_sdm_head else 0
        )
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
        return SDMHeadNetwork(backbone, num_seg, num_sdm, sdm_activation=cls.sdm_activation)

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
        """A 0-d bool tensor: the loss is finite on every DDP rank (no host sync). A NaN or inf in any term
        it weighs makes the loss non-finite (a zero weight too: 0 x inf is NaN), so one check covers them."""
        finite = torch.isfinite(terms["loss"].detach())
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
        logits = unwrap(self.network).logits(outputs[0])
        tp, fp, fn = self.pseudo_dice_counts(logits, targets[0])
        result = terms_to_host(terms)
        result.update(tp_hard=tp.cpu().numpy(), fp_hard=fp.cpu().numpy(), fn_hard=fn.cpu().numpy())
        return result

    def pseudo_dice_counts(self, logits: torch.Tensor, target: torch.Tensor):
        """tp, fp, fn per foreground label or region of the full-resolution output, exactly as
        ``nnUNetTrainer.validation_step`` counts them (ignore-label voxels masked)."""
        manager = self.label_manager
        if self.distance_targets_in_loader:
            target = target[:, :1]
        axes = [0, *range(2, logits.ndim)]
        if manager.has_regions:
            predicted = (torch.sigmoid(logits) > 0.5).long()
        else:
            predicted = torch.zeros(logits.shape, device=logits.device, dtype=torch.float16)
            predicted.scatter_(1, logits.argmax(1)[:, None], 1)
        mask = None
        if manager.has_ignore_label:
            if manager.has_regions:
                mask, target = ~target[:, -1:].bool(), target[:, :-1]
            else:
                mask = (target != manager.ignore_label).float()
                target = torch.where(target == manager.ignore_label, 0, target)
        tp, fp, fn, _ = get_tp_fp_fn_tn(predicted, target, axes=axes, mask=mask)
        if not manager.has_regions:  # no background Dice
            tp, fp, fn = tp[1:], fp[1:], fn[1:]
        return tp, fp, fn

    # ---- what the segmentation head predicts, for the losses that need it -------------------------
    def foreground_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, *spatial) probabilities of each foreground label (softmax without the background) or
        region (sigmoid), in the order of ``ScaleTarget.masks``; float32."""
        if self.region_based:
            return torch.sigmoid(logits.float())
        return torch.softmax(logits.float(), 1)[:, 1:]

    def predicted_masks(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, *spatial) bool: the segmentation the predictor makes, per foreground label or region."""
        if self.region_based:
            return logits > 0
        return label_masks(logits.argmax(1), self.foreground_labels)

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


__all__ = [
    "BUDGET_ENV",
    "CHECKPOINT_EXTRAS_KEY",
    "PLANS_KEY",
    "CheckpointError",
    "NNUNetSoftDice",
    "NonFiniteLossError",
    "ScaleTarget",
    "UnsupportedSetupError",
    "nnUNetTrainerDistanceBase",
    "nnunet_dice_ce_loss",
    "nnunet_soft_dice_loss",
    "term_gradient_norms_of",
    "terms_to_host",
]
