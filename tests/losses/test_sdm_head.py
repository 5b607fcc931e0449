"""The fused SDM-head terms equal the three autograd losses they replace, in value and gradient."""

from __future__ import annotations

import pytest
import torch

from nnunet_sdm.losses import HeavisideConsistencyLoss, L2SDMLoss, ProductSDMLoss, SDMHeadTermsLoss


def reference_terms(logits, sdm, target, k):
    foreground = torch.softmax(logits.float(), dim=1)[:, 1:]
    return {
        "l2": L2SDMLoss()(sdm, target),
        "product": ProductSDMLoss()(sdm, target),
        "consistency": HeavisideConsistencyLoss()(foreground, sdm, k),
    }


def inputs(shape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    b, c, *spatial = shape
    logits = torch.randn(b, c + 1, *spatial, generator=generator, dtype=torch.float64).to(dtype)
    sdm = torch.tanh(torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)
    target = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).to(dtype)
    return logits.requires_grad_(), sdm.requires_grad_(), target


@pytest.mark.parametrize("shape", [(2, 3, 5, 6, 4), (1, 1, 7, 9), (3, 2, 1, 4, 4)])
@pytest.mark.parametrize("chunk", [1, 37, 100, 2**22])  # slabs, members, all
def test_values_and_gradients_equal_the_autograd_losses(shape, chunk):
    k = 4.7
    logits, sdm, target = inputs(shape)
    weights = {"l2": 0.3, "product": -1.1, "consistency": 2.5}  # any weights: each term's gradient counts
    fused = SDMHeadTermsLoss(chunk_elements=chunk)(logits, sdm, target, k)
    total = sum(weights[n] * v for n, v in fused.items())
    grads = torch.autograd.grad(total, (logits, sdm))
    reference = reference_terms(logits, sdm, target, k)
    expected = torch.autograd.grad(sum(weights[n] * v for n, v in reference.items()), (logits, sdm))
    for name in weights:
        assert fused[name].item() == pytest.approx(reference[name].item(), rel=1e-5, abs=1e-7)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)


def masked_reference_terms(logits, sdm, target, k, mask, regions):
    foreground = torch.sigmoid(logits.float()) if regions else torch.softmax(logits.float(), dim=1)[:, 1:]
    return {
        "l2": L2SDMLoss()(sdm, target, mask),
        "product": ProductSDMLoss()(sdm, target, mask),
        "consistency": HeavisideConsistencyLoss()(foreground, sdm, k),  # label-free: never masked
    }


@pytest.mark.parametrize("regions", [False, True], ids=["labels", "regions"])
@pytest.mark.parametrize("mask_channels", [None, 1, 3])
def test_regions_and_masks_equal_the_autograd_losses(regions, mask_channels):
    """Region logits (one sigmoid per SDM channel) and a mask of the voxels the regression counts (the
    certified voxels under the ignore label), per class or shared, against the autograd losses."""
    k, shape = 3.3, (2, 3, 5, 6, 4)
    logits, sdm, target = inputs(shape, seed=4)
    if regions:
        logits = logits.detach()[:, 1:].clone().requires_grad_()
    mask = None
    if mask_channels is not None:
        generator = torch.Generator().manual_seed(9)
        mask = torch.rand(shape[0], mask_channels, *shape[2:], generator=generator) > 0.4
        mask[0, 0] = False  # a class (or all) with no counted voxel in one sample
    weights = {"l2": 0.7, "product": 1.3, "consistency": -0.9}
    fused = SDMHeadTermsLoss(regions=regions, chunk_elements=29)(logits, sdm, target, k, mask)
    grads = torch.autograd.grad(sum(weights[n] * v for n, v in fused.items()), (logits, sdm))
    reference = masked_reference_terms(logits, sdm, target, k, mask, regions)
    expected = torch.autograd.grad(sum(weights[n] * v for n, v in reference.items()), (logits, sdm))
    for name in weights:
        assert fused[name].item() == pytest.approx(reference[name].item(), rel=1e-5, abs=1e-7), name
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)


def test_gradcheck_regions_with_mask_in_float64():
    logits, sdm, target = inputs((2, 2, 3, 4, 3), dtype=torch.float64, seed=5)
    logits = logits.detach()[:, 1:].clone().requires_grad_()
    mask = torch.rand(2, 2, 3, 4, 3, generator=torch.Generator().manual_seed(1)) > 0.5
    loss = SDMHeadTermsLoss(regions=True, chunk_elements=20)
    assert torch.autograd.gradcheck(
        lambda z, p: torch.stack(list(loss(z, p, target, 3.0, mask).values())), (logits, sdm)
    )


def test_gradcheck_in_float64():
    logits, sdm, target = inputs((2, 2, 3, 4, 3), dtype=torch.float64)
    loss = SDMHeadTermsLoss(chunk_elements=20)

    def total(z, p):
        terms = loss(z, p, target, 3.0)
        return torch.stack([terms["l2"], terms["product"], terms["consistency"]])

    assert torch.autograd.gradcheck(total, (logits, sdm))


def test_half_precision_inputs_keep_their_dtype_and_match():
    logits, sdm, target = inputs((2, 2, 4, 5, 3))
    half = [x.detach().to(torch.bfloat16).requires_grad_() for x in (logits, sdm)]
    terms = SDMHeadTermsLoss()(*half, target.to(torch.float16), 2.0)
    sum(terms.values()).backward()
    assert half[0].grad.dtype == torch.bfloat16 and half[1].grad.dtype == torch.bfloat16
    reference = reference_terms(half[0].float(), half[1].float(), target.to(torch.float16).float(), 2.0)
    for name, value in terms.items():
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(reference[name].item(), rel=1e-4)


def test_keeps_no_large_tensor_for_backward():
    """Only the inputs are saved: nothing of shape (B, C, *spatial) is created and kept for backward."""
    logits, sdm, target = inputs((2, 3, 8, 8, 8))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        SDMHeadTermsLoss()(logits, sdm, target, 2.0)
    inputs_memory = {x.data_ptr() for x in (logits, sdm, target)}
    large = [x for x in saved if x.numel() > 3 * sdm.shape[1]]  # besides the (3, C) class weights
    assert len(large) == 3 and {x.data_ptr() for x in large} == inputs_memory


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f, z, p, t: f(z[:, :-1], p, t, 1.0), "expected \\(B, C \\+ 1, \\*spatial\\) logits"),
        (lambda f, z, p, t: f(z, p, t[:, :1], 1.0), "shapes differ"),
        (lambda f, z, p, t: f(z, p, t, 0.0), "k must be"),
    ],
)
def test_bad_arguments_are_named(call, message):
    logits, sdm, target = inputs((1, 2, 3, 3, 3))
    with pytest.raises(ValueError, match=message):
        call(SDMHeadTermsLoss(), logits, sdm, target)
