"""Masks per foreground label from a label map: one broadcast comparison, whatever the label values."""

from __future__ import annotations

import pytest
import torch

from nnunet_sdm.training.targets import label_masks


@pytest.mark.parametrize("labels", [[1, 2, 3], [2, 5], [1]], ids=["consecutive", "gaps", "one"])
def test_label_masks_are_one_channel_per_foreground_label(labels):
    label_map = torch.randint(0, 6, (2, 4, 5, 3), generator=torch.Generator().manual_seed(0))
    masks = label_masks(label_map, labels)
    assert masks.dtype == torch.bool and masks.shape == (2, len(labels), 4, 5, 3)
    assert torch.equal(masks, torch.stack([label_map == c for c in labels], dim=1))
