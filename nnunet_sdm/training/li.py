"""Li et al.: distance-map regression with a light regression network (LR-Net) and the MapDice loss.

The segmentation network (M-Net) is nnU-Net's, with its segmentation head only; targets are the
NI-DM of eq. 1 (per foreground class and connected component, in [0, 1], 1 on the boundary, 0
outside the class; :func:`nnunet_sdm.distance.ni_dm` of the augmented labels of the train step, on the
training device; only the connected components are labelled on the CPU). The paper's ablations
(Tables 1 and 2) combine three terms, never cross-entropy:

- ``nnUNetTrainerMapDice``: ``L_MapDice`` (eq. 2) alone, the paper's baseline "MNet + L_MapDice";
  MapDice replaces the Dice loss (there is no CE term anywhere in the paper).
- ``nnUNetTrainerLRNet``: ``L_Dice + alpha * L_smoothL1(LR-Net(softmax(logits)), NI-DM)``, the
  paper's "MNet + L_Dice + LR-Net + alpha L_smoothL1".
- ``nnUNetTrainerLRNetMapDice``: ``L_MapDice + alpha * L_smoothL1(...)``, the paper's best row.

``L_Dice`` is the soft Dice summed over the foreground classes (:class:`SoftDiceLoss`), ``L_MapDice``
eq. 2 taken literally (:class:`MapDiceLoss`: ``1 - sum_c``), both on the softmax probabilities of the
foreground channels, with the configuration's ``batch_dice``.

LR-Net (:class:`~nnunet_sdm.network.lrnet.LRNet`, section 2.2): a light U-Net with one down- and one
up-sampling and a ReLU output, input = all class probabilities (background included, the paper's
"two-channel probability map" for one tumour class), output = one NI-DM per foreground class. As in
the paper it is trained alone first, on one-hot ground-truth masks of training patches (drawn from
this trainer's own training data loader once ``on_train_start`` has built it; Adam, lr 1e-3 as in
the paper's implementation details), then frozen (``requires_grad = False``, eval mode) while the
M-Net trains; gradients flow through it into the segmentation logits. It is not part of
``self.network``: inference is the stock predictor on the M-Net alone ("during inference the LR-Net
can be removed"), and checkpoints load strictly. Its weights are written to ``lrnet.pth`` in the fold
folder and under the key ``lrnet_weights`` of the checkpoint extras; ``nnUNetv2_train ... --c`` restores
them from the checkpoint and does not pre-train again.

Choices the paper leaves open (class attributes, override in a subclass):
- ``lrnet_loss_weight`` (alpha): the paper names alpha ("used to balance the magnitude difference of
  two different losses") but gives no value. Default 10: the smooth L1 of an NI-DM averaged over a
  patch is small (mostly background, where target and output are 0; at most 0.5 per voxel), so alpha
  scales it up towards the Dice term's magnitude, which the paper's results favour over alpha = 1.
- deep supervision: the Dice / MapDice term uses every deep-supervision output with nnU-Net's
  weights (as nnU-Net's own Dice); the LR-Net term uses the full-resolution output only, with weight
  alpha (the DS weights sum to 1, so alpha keeps the paper's ratio to the Dice term). The paper's
  M-Net has one output; the LR-Net is pre-trained at full resolution, and NI-DM in voxels depends on
  the resolution (offset one voxel, normalised per component), so the frozen mapping is not valid at
  the coarse, anisotropically pooled scales. So the LRNet-only trainer computes NI-DM targets at full
  resolution only.
- smooth L1 ``beta`` = 1 (torch's and Girshick's default); ``ni_dm_offset`` = None (the paper's "+1"
  as one voxel, ``min(spacing)`` mm).
- pre-training budget: ``lrnet_pretrain_iterations`` = 250 batches (one nnU-Net epoch), overridden
  for smoke tests by the environment variable ``nnUNetSDM_lrnet_pretrain_iterations`` (an integer
  >= 1, like the base trainer's ``nnUNetSDM_num_epochs``); ``lrnet_pretrain_lr`` = 1e-3.

Label datasets only (the base trainer stops at start-up on regions and on an ignore label).
"""

from __future__ import annotations

from os.path import join

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from nnunet_sdm.checks import integer, non_negative, one_of, optional, positive
from nnunet_sdm.distance import ni_dm
from nnunet_sdm.losses import SoftDiceLoss
from nnunet_sdm.losses.map_dice import MapDiceLoss, SmoothL1MapLoss
from nnunet_sdm.network import SDMOutput
from nnunet_sdm.network.lrnet import LRNet, freeze
from nnunet_sdm.training.base import BUDGET_ENV, ScaleTarget, nnUNetTrainerDistanceBase

#: alpha, the weight of the LR-Net's smooth L1 term (not given in the paper; see the module docstring)
LI_ALPHA = 10.0
#: environment variable overriding ``lrnet_pretrain_iterations`` (smoke tests, CPU runs)
PRETRAIN_ITERATIONS_ENV = "nnUNetSDM_lrnet_pretrain_iterations"
#: key of the LR-Net's state_dict in nnU-Net checkpoints
LRNET_CHECKPOINT_KEY = "lrnet_weights"
#: the LR-Net's weights in the fold folder
LRNET_FILE = "lrnet.pth"


class nnUNetTrainerLiBase(nnUNetTrainerDistanceBase):
    """Shared plumbing of Li et al.'s trainers (not a trainer to run by itself)."""

    has_segmentation_head = True
    has_sdm_head = False
    uses_distance_targets = True
    supports_regions = False
    supports_ignore_label = False
    unsupported_reason = (
        "Li et al.'s NI-DM normalises the distances of every connected component of a class by that component's "
        "deepest voxel, and the LR-Net maps a complete softmax over mutually exclusive classes to it: with "
        "unknown (ignore-label) voxels a component's extent and depth are unknown, and nested regions are "
        "neither exclusive classes nor a softmax, so neither eq. 1 nor the LR-Net is defined there."
    )

    #: the per-scale segmentation loss: "dice" (soft Dice) or "map_dice" (eq. 2)
    segmentation_loss: str = "dice"
    #: add alpha * smooth L1 between LR-Net(softmax(logits)) and the NI-DM (full resolution)
    use_lrnet: bool = False
    lrnet_loss_weight: float = LI_ALPHA
    smooth_l1_beta: float = 1.0
    dice_smooth: float = 1e-5
    #: the "+1" of eq. 1 in mm; None = one voxel (min spacing)
    ni_dm_offset: float | None = None
    lrnet_features: int = 16
    lrnet_pretrain_iterations: int = 250
    lrnet_pretrain_lr: float = 1e-3
    lrnet_log_every: int = 50
    budget_environment = {**BUDGET_ENV, "lrnet_pretrain_iterations": PRETRAIN_ITERATIONS_ENV}

    def init_trainer_state(self) -> None:
        super().init_trainer_state()
        self.lrnet: LRNet | None = None
        self.lrnet_loss: SmoothL1MapLoss | None = None
        #: where the LR-Net's weights came from ("pre-training", "checkpoint <file>"), None = not ready
        self.lrnet_source: str | None = None

    # ---- settings ----------------------------------------------------------------------------
    setting_rules = {
        "segmentation_loss": one_of("dice", "map_dice"),
        "lrnet_loss_weight": non_negative,
        "smooth_l1_beta": positive,
        "dice_smooth": positive,
        "ni_dm_offset": optional(positive),
        "lrnet_features": integer(1),
        "lrnet_pretrain_iterations": integer(1),
        "lrnet_pretrain_lr": positive,
        "lrnet_log_every": integer(1),
    }

    # ---- losses and targets --------------------------------------------------------------------
    def build_scale_loss(self) -> nn.Module:
        batch_dice = self.configuration_manager.batch_dice
        if self.segmentation_loss == "map_dice":
            return MapDiceLoss(batch_dice=batch_dice, ddp=self.is_ddp, smooth=self.dice_smooth)
        return SoftDiceLoss(batch_dice=batch_dice, ddp=self.is_ddp, smooth=self.dice_smooth)

    def ni_dm_target(self, labels: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
        """NI-DM (eq. 1) per foreground class, (B, K, *spatial) on the labels' device."""
        return ni_dm(labels, spacing, self.foreground_labels, offset=self.ni_dm_offset)

    def distance_target(self, target: ScaleTarget) -> tuple[torch.Tensor, None]:
        return self.ni_dm_target(target.labels, target.spacing), None

    def needs_distance_target(self, full_resolution: bool) -> bool:
        # MapDice needs the NI-DM at every scale, the LR-Net term at full resolution only
        return self.segmentation_loss == "map_dice" or (self.use_lrnet and full_resolution)

    def scale_loss(self, output: SDMOutput, target: ScaleTarget) -> dict[str, torch.Tensor]:
        probabilities = torch.softmax(output.seg.float(), dim=1)[:, 1:]  # foreground channels, labels 1..K
        if self.segmentation_loss == "map_dice":
            value = self.loss(probabilities, target.distance)
            return {"loss": value, "map_dice": value}
        value = self.loss(probabilities, target.onehot)
        return {"loss": value, "dice": value}

    def forward_and_loss(self, data: torch.Tensor, targets: list[torch.Tensor]):
        outputs, scale_targets, terms = super().forward_and_loss(data, targets)
        if self.use_lrnet:
            if self.lrnet_source is None:
                raise RuntimeError(f"{type(self).__name__}: the LR-Net is neither pre-trained nor loaded")
            full = (
                scale_targets[0] if 0 in scale_targets else self.make_scale_target(targets[0], data.shape[2:])
            )
            probabilities = torch.softmax(outputs[0].seg.float(), dim=1)  # all classes, background included
            regression = self.lrnet_loss(self.lrnet(probabilities), full.distance)
            terms = {**terms, "lrnet_smooth_l1": regression}
            terms["loss"] = terms["loss"] + self.lrnet_loss_weight * regression
        return outputs, scale_targets, terms

    # ---- the LR-Net ----------------------------------------------------------------------------
    def initialize(self) -> None:
        super().initialize()
        if self.use_lrnet:
            spatial_dims = len(self.configuration_manager.patch_size)
            self.lrnet = LRNet(
                in_channels=self.label_manager.num_segmentation_heads,
                out_channels=len(self.foreground_labels),
                conv_op=nn.Conv3d if spatial_dims == 3 else nn.Conv2d,
                features=self.lrnet_features,
            ).to(self.device)
            self.lrnet_loss = SmoothL1MapLoss(beta=self.smooth_l1_beta)

    def on_train_start(self) -> None:
        super().on_train_start()  # initialises and builds the data loaders
        if not self.use_lrnet:
            return
        if self.lrnet_source is None:
            self.pretrain_lrnet()
        else:
            self.print_to_log_file(f"LR-Net: weights from {self.lrnet_source}; pre-training skipped")
        if self.local_rank == 0:
            self.save_lrnet(join(self.output_folder, LRNET_FILE))

    def pretrain_lrnet(self) -> None:
        """Train the LR-Net on one-hot ground truth -> NI-DM of training patches, then freeze it."""
        iterations, lr = self.lrnet_pretrain_iterations, self.lrnet_pretrain_lr
        self.print_to_log_file(
            f"LR-Net pre-training: {iterations} iterations on one-hot ground truth of training patches, Adam lr {lr}"
        )
        num_classes = self.label_manager.num_segmentation_heads
        spacing = tuple(float(s) for s in self.configuration_manager.spacing)
        optimizer = torch.optim.Adam(self.lrnet.parameters(), lr=lr)
        self.lrnet.train()
        window_l1, window_error, window_inside = [], [], []
        for iteration in range(1, iterations + 1):
            target = next(self.dataloader_train)["target"]
            target = target[0] if isinstance(target, list) else target  # full resolution
            labels = target[:, 0].long().to(self.device, non_blocking=True)
            phi = self.ni_dm_target(labels, spacing[-(labels.ndim - 1) :])
            onehot = F.one_hot(labels, num_classes).movedim(-1, 1).float()
            with torch.enable_grad():
                predicted = self.lrnet(onehot)
                loss = self.lrnet_loss(predicted, phi)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            window_l1.append(loss.item())
            error = (predicted.detach() - phi).abs()
            window_error.append(error.mean().item())
            inside = phi > 0
            if inside.any():
                window_inside.append(error[inside].mean().item())
            if iteration % self.lrnet_log_every == 0 or iteration == iterations:
                self.print_to_log_file(
                    f"LR-Net pre-training iteration {iteration}/{iterations}: smooth L1 {np.mean(window_l1):.5f}, "
                    f"mean |error| {np.mean(window_error):.5f}, inside the classes "
                    f"{np.mean(window_inside) if window_inside else float('nan'):.5f}"
                )
                window_l1, window_error, window_inside = [], [], []
        freeze(self.lrnet)
        if self.is_ddp:  # every rank trained on its own batches: use rank 0's weights everywhere
            for tensor in self.lrnet.state_dict().values():
                dist.broadcast(tensor, src=0)
        self.lrnet_source = "pre-training"
        self.print_to_log_file("LR-Net pre-training done; LR-Net frozen")

    def lrnet_state(self) -> dict:
        """The LR-Net's weights and the arguments to rebuild it (what ``lrnet.pth`` holds)."""
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.lrnet.state_dict().items()},
            "in_channels": self.lrnet.in_channels,
            "out_channels": self.lrnet.out_channels,
            "spatial_dims": self.lrnet.spatial_dims,
            "features": self.lrnet.features,
        }

    def load_lrnet_state(self, state: dict, source: str) -> None:
        self.lrnet.load_state_dict(state["state_dict"])
        freeze(self.lrnet)
        self.lrnet_source = source

    def save_lrnet(self, filename: str) -> None:
        torch.save(self.lrnet_state(), filename)
        self.print_to_log_file(f"LR-Net weights saved to {filename}")

    # ---- checkpoints -----------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        extras = super().checkpoint_extras()
        if self.use_lrnet and self.lrnet_source is not None:
            extras[LRNET_CHECKPOINT_KEY] = self.lrnet_state()
        return extras

    def load_checkpoint_extras(self, extras: dict, source: str) -> None:
        super().load_checkpoint_extras(extras, source)
        if not self.use_lrnet:
            return
        state = extras.get(LRNET_CHECKPOINT_KEY)
        if state is None:
            self.print_to_log_file(f"LR-Net: no '{LRNET_CHECKPOINT_KEY}' in {source}; it will be pre-trained")
            return
        self.load_lrnet_state(state, f"checkpoint {source}")
        self.print_to_log_file(f"LR-Net: weights loaded from {source}")


class nnUNetTrainerMapDice(nnUNetTrainerLiBase):
    """Li et al.: the M-Net trained with MapDice (eq. 2) on the NI-DM (eq. 1), no CE, no LR-Net."""

    segmentation_loss = "map_dice"
    use_lrnet = False


class nnUNetTrainerLRNet(nnUNetTrainerLiBase):
    """Li et al.: Dice + alpha * smooth L1(LR-Net(softmax(logits)), NI-DM), frozen pre-trained LR-Net."""

    segmentation_loss = "dice"
    use_lrnet = True


class nnUNetTrainerLRNetMapDice(nnUNetTrainerLRNet):
    """Li et al.'s full method: MapDice + alpha * smooth L1(LR-Net(softmax(logits)), NI-DM)."""

    segmentation_loss = "map_dice"
