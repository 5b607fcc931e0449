"""In-loader SDM targets equal the on-device ones, scale by scale."""

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

from nnunet_sdm.distance import normalise_xue, signed_distance
from nnunet_sdm.training.loader_targets import SDMTargetTransform


def test_in_loader_targets_match_on_device_targets():
    rng = np.random.default_rng(0)
    labels = np.zeros((1, 16, 32, 32), dtype=np.int16)
    labels[0, 4:12, 8:24, 10:20] = 1
    labels[0, 6:8, 2:30, 25:27] = 2
    labels[0] = np.where(rng.random(labels.shape[1:]) < 0.01, 0, labels[0])
    spacing = (2.5, 0.8, 0.8)
    scales = [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25]]
    pipeline = ComposeTransforms([DownsampleSegForDSTransform(scales), SDMTargetTransform([1, 2], spacing)])
    out = pipeline(segmentation=torch.from_numpy(labels))["segmentation"]
    assert len(out) == 3
    for scale_target in out:
        scale_labels = scale_target[0].long()
        shape = scale_labels.shape
        scale_spacing = [s * f / d for s, f, d in zip(spacing, labels.shape[1:], shape)]
        # labels survive exactly, and the SDM sign gives them back
        expected = normalise_xue(signed_distance(scale_labels[None], scale_spacing, [1, 2]), spatial_dims=3)[
            0
        ]
        assert torch.allclose(scale_target[1:], expected, atol=1e-6)
        for k, c in enumerate([1, 2]):
            assert torch.equal(scale_target[1 + k] < 0, scale_labels == c)
