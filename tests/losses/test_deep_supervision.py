"""The deep-supervision sum of loss terms: stacked per scale, it equals the term-by-term weighted sum in
value and gradient, skips zero weights, and sums scales with different terms term by term."""

from __future__ import annotations

import pytest
import torch

from nnunet_sdm.losses import weighted_terms


def scale_terms(x: torch.Tensor, i: int, names=("loss", "dice", "l2")) -> dict[str, torch.Tensor]:
    return {name: (x * (i + j + 1)).square().sum() for j, name in enumerate(names)}


def test_equals_the_term_by_term_sum_and_skips_zero_weights():
    x = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    weights = [0.5, 0.3, 0.2, 0.0]
    calls = []

    def per_scale(i):
        calls.append(i)
        return scale_terms(x, i)

    total = weighted_terms(per_scale, weights)
    assert calls == [0, 1, 2] and list(total) == ["loss", "dice", "l2"]
    for name in total:
        expected = sum(w * scale_terms(x, i)[name] for i, w in enumerate(weights) if w != 0)
        torch.testing.assert_close(total[name], expected)
    (grad,) = torch.autograd.grad(total["dice"], x)
    (expected,) = torch.autograd.grad(sum(w * scale_terms(x, i)["dice"] for i, w in enumerate(weights)), x)
    torch.testing.assert_close(grad, expected)


def test_scales_with_different_terms_are_summed_term_by_term():
    x = torch.ones(3)
    total = weighted_terms(lambda i: scale_terms(x, i, ("loss", "dice") if i else ("loss", "l2")), [0.5, 0.5])
    assert total["loss"].item() == pytest.approx(0.5 * 3 + 0.5 * 12)
    assert total["l2"].item() == pytest.approx(0.5 * 12) and total["dice"].item() == pytest.approx(0.5 * 27)


def test_all_weights_zero_gives_no_terms():
    assert weighted_terms(lambda i: scale_terms(torch.ones(1), i), [0.0]) == {}
