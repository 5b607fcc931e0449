"""Helpers of the loss tests."""

from __future__ import annotations

import torch


def label_fill(fill: str) -> torch.Tensor:
    """(2, 6, 6, 6) label maps with classes 1 and 2: "absent" (all background), "full" (all class 1) or
    "mixed" (random)."""
    torch.manual_seed(0)
    fills = {  # all three made, so the random state afterwards is the same for every fill
        "absent": torch.zeros(2, 6, 6, 6, dtype=torch.long),
        "full": torch.ones(2, 6, 6, 6, dtype=torch.long),
        "mixed": torch.randint(0, 3, (2, 6, 6, 6)),
    }
    return fills[fill]
