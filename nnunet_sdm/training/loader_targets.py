"""SDM targets made in the data-loader workers (CPU, ``edt``), for comparison with the default.

The default SDM trainers make their targets on the training device in the train step, which keeps
nnU-Net's data pipeline as cheap as stock. This transform makes the same targets in the workers
instead: appended after nnU-Net's deep-supervision down-sampling, it turns every scale's label map
(1, *spatial) into (1 + K, *spatial) float32: channel 0 the labels, then the normalised SDM of each
foreground class, with that scale's spacing. The base trainer splits them again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform

from nnunet_sdm.distance import normalise_xue, signed_distance


class SDMTargetTransform(SegOnlyTransform):
    def __init__(
        self,
        classes: Sequence[int],
        spacing: Sequence[float],
        normalise: Callable = normalise_xue,
    ) -> None:
        super().__init__()
        self.classes = [int(c) for c in classes]
        self.spacing = [float(s) for s in spacing]
        self.normalise = normalise  # must be picklable (module-level function or functools.partial)

    def _one_scale(self, segmentation: torch.Tensor, full_shape: Sequence[int]) -> torch.Tensor:
        labels = segmentation[0].numpy()
        spacing = [s * f / d for s, f, d in zip(self.spacing, full_shape, labels.shape)]
        sdm = self.normalise(signed_distance(labels, spacing, self.classes, backend="edt"), len(spacing))
        return torch.cat((segmentation[:1].float(), torch.from_numpy(sdm)), dim=0)

    def _apply_to_segmentation(self, segmentation, **params):
        scales = segmentation if isinstance(segmentation, list) else [segmentation]
        full_shape = scales[0].shape[1:]
        out = [self._one_scale(s, full_shape) for s in scales]
        return out if isinstance(segmentation, list) else out[0]
