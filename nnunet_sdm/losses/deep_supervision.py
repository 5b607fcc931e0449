"""Deep-supervision weighting, as nnU-Net does it, in one place.

nnU-Net weights output i (0 = full resolution) by 1 / 2^i, gives the lowest-resolution output weight
0 and normalises the weights to sum to 1. Under DDP without torch.compile it uses 1e-6 instead of 0
for the last output, because DDP complains about parameters that get no gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def deep_supervision_weights(num_outputs: int, last_weight: float = 0.0) -> list[float]:
    """nnU-Net's weights for ``num_outputs`` deep-supervision outputs (full resolution first)."""
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    if num_outputs == 1:
        return [1.0]
    weights = [1 / 2**i for i in range(num_outputs)]
    weights[-1] = float(last_weight)
    total = sum(weights)
    return [w / total for w in weights]


def weighted_terms(
    per_scale: Callable[[int], dict[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted sum, term by term, of ``per_scale(i)`` over the scales with non-zero weight.

    The terms of a scale are stacked and added in one multiply-add (two kernels a scale however many
    terms); scales that return different terms are summed term by term.
    """
    scales = [(weight, per_scale(i)) for i, weight in enumerate(weights) if weight != 0]
    if not scales:
        return {}
    names = list(scales[0][1])
    if all(list(terms) == names for _, terms in scales):
        total = None
        for weight, terms in scales:
            stacked = torch.stack(list(terms.values()))
            total = stacked * weight if total is None else torch.add(total, stacked, alpha=weight)
        return dict(zip(names, total.unbind()))
    summed: dict[str, torch.Tensor] = {}
    for weight, terms in scales:
        for name, value in terms.items():
            summed[name] = summed[name] + weight * value if name in summed else weight * value
    return summed
