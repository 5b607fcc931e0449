"""The targets of every deep-supervision scale: masks per foreground label or region from the loader's
augmented labels, and the method's distance map of them, made on the training device in the train step."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from nnunet_sdm.distance import certified_signed_distance, label_masks, normalise_xue


@dataclass
class ScaleTarget:
    """Targets of one deep-supervision scale, all on the training device.

    ``masks`` has one channel per foreground label (label maps) or per region (region-based datasets),
    in the order of the SDM head's channels; ``known`` is False on voxels with nnU-Net's ignore label.
    """

    loss_target: torch.Tensor  # as the loader delivers it: what nnU-Net's own losses take
    masks: torch.Tensor  # (B, K, *spatial) bool
    spacing: tuple[float, ...]  # mm per voxel at this scale
    labels: torch.Tensor | None = None  # (B, *spatial) int64 label map (label datasets; ignore label kept)
    known: torch.Tensor | None = None  # (B, 1, *spatial) bool, None: every label known
    distance: torch.Tensor | None = None  # (B, K or 1, *spatial) the method's distance target, if any
    #: (B, K, *spatial) bool: where ``distance`` holds whatever the unknown labels are (None: everywhere)
    certified: torch.Tensor | None = None

    @cached_property
    def onehot(self) -> torch.Tensor:
        """(B, K, *spatial) float, one channel per foreground label or region; made only when used."""
        return self.masks.float()


class DistanceTargets:
    """Mixin of the base trainer: :class:`ScaleTarget` of every deep-supervision scale that has a weight."""

    @property
    def foreground_labels(self) -> list[int]:
        return [int(c) for c in self.label_manager.foreground_labels]

    def scale_spacing(self, full_shape, scale_shape) -> tuple[float, ...]:
        """Voxel spacing (mm) of a deep-supervision scale, from the configuration's spacing."""
        spacing = self.configuration_manager.spacing[-len(full_shape) :]
        return tuple(float(s) * f / d for s, f, d in zip(spacing, full_shape, scale_shape))

    def normalise_sdm(
        self, sdm_mm: torch.Tensor, spatial_dims: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalisation of the full SDM target; Xue et al.: per sample and class to [-1, 1] (under the
        ignore label by the largest certified distances, ``mask``)."""
        return normalise_xue(sdm_mm, spatial_dims=spatial_dims, mask=mask)

    def distance_target(self, target: ScaleTarget) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The method's distance map of one scale's ``target.masks`` -> ``(distance, certified)``:
        (B, K or 1, *spatial), and where it holds whatever the ignore-label voxels are (None: everywhere).

        The exact SDM of every foreground label or region (``certified_signed_distance``: truncated at
        ``truncation_mm`` if set, computed in its band only; else in mm), then ``distance_from_sdm``.
        """
        sdm, certified = certified_signed_distance(
            target.masks,
            target.known,
            target.spacing,
            tau=self.truncation_mm,
            backend=self.sdm_backend,
            max_chunk_elements=self.sdm_chunk_elements,
        )
        return self.distance_from_sdm(sdm, certified, target.spacing), certified

    def distance_from_sdm(
        self, sdm: torch.Tensor, certified: torch.Tensor | None, spacing: tuple[float, ...]
    ) -> torch.Tensor:
        """The method's target from the SDM: the truncated SDM in float16 (values in [-1, 1] to 2.5e-4),
        else the SDM in mm normalised by ``normalise_sdm``."""
        if self.truncation_mm is not None:
            return sdm.to(torch.float16)
        return self.normalise_sdm(sdm, len(spacing), certified)

    def needs_distance_target(self, full_resolution: bool) -> bool:
        """Whether a scale's loss uses ``distance_target`` (all scales by default)."""
        return self.uses_distance_targets

    def split_target(self, target: torch.Tensor) -> ScaleTarget:
        """The loader's target of one scale as masks per foreground label or region (no distances yet).

        Label maps: (B, 1, *spatial) labels, the ignore label (if any) marking unknown voxels. Regions:
        (B, R, *spatial) bool, plus nnU-Net's ignore channel last (``ConvertSegmentationToRegionsTransform``
        with the ignore label appended).
        """
        manager = self.label_manager
        spacing = ()
        if manager.has_regions:
            num_regions = len(manager.foreground_regions)
            masks = target[:, :num_regions].bool()
            known = ~target[:, num_regions:].bool() if manager.has_ignore_label else None
            return ScaleTarget(target, masks, spacing, known=known)
        labels = target[:, 0].long()
        masks = label_masks(labels, self.foreground_labels)
        known = (labels != manager.ignore_label)[:, None] if manager.has_ignore_label else None
        return ScaleTarget(target, masks, spacing, labels=labels, known=known)

    def make_scale_target(self, target: torch.Tensor, full_shape) -> ScaleTarget:
        distance = None
        if self.distance_targets_in_loader:  # label channel, then the SDMs made by SDMTargetTransform
            expected = 1 + len(self.foreground_labels)
            if target.shape[1] != expected:
                raise ValueError(
                    f"{type(self).__name__}: the loader's target has {target.shape[1]} channels, expected {expected} "
                    "(labels + one SDM per foreground class from SDMTargetTransform in the data-loader transforms)"
                )
            target, distance = target[:, :1], target[:, 1:].float()
        scale = self.split_target(target)
        scale.spacing = self.scale_spacing(full_shape, target.shape[2:])
        if distance is None and self.needs_distance_target(tuple(target.shape[2:]) == tuple(full_shape)):
            with torch.no_grad():
                distance, scale.certified = self.distance_target(scale)
        scale.distance = distance
        return scale

    def make_scale_targets(self, targets: list[torch.Tensor]) -> dict[int, ScaleTarget]:
        """The targets of every deep-supervision scale that has a weight, keyed by scale."""
        full_shape = targets[0].shape[2:]
        weights = self.deep_supervision_weights[: len(targets)]
        return {i: self.make_scale_target(targets[i], full_shape) for i, w in enumerate(weights) if w != 0}
