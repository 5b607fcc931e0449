"""The SDM-head terms of a dual-head network in one memory-lean pass: L2 and product regression (Wang &
Zhang 2021; Xue et al. 2020, eq. 4) and the Heaviside consistency with the segmentation head (Luo et al.
2021, eq. 4), with their gradients written out.

For segmentation logits ``z`` (label maps: B, C + 1, *spatial, channel 0 background; regions: B, C,
*spatial), predicted SDMs ``p`` and target SDMs ``t`` (B, C, *spatial), the foreground probabilities
``q = softmax(z)[:, 1:]`` (label maps) or ``q = sigmoid(z)`` (regions) and ``H = sigmoid(-k p)``, with
``N = B x voxels`` and ``N_c`` the voxels counted for class ``c`` (all, or those of an optional mask
``m``, e.g. the certified voxels under nnU-Net's ignore label):

    l2          = sum_c (1 / N_c) sum m (p - t)^2                         (= L2SDMLoss)
    product     = sum_c (1 / N_c) sum -m p t / (p t + p^2 + t^2 + eps)    (= ProductSDMLoss)
    consistency = (1 / (C N)) sum (q - H)^2                               (= HeavisideConsistencyLoss)

    d l2 / d p          = 2 m (p - t) / N_c
    d product / d p     = -m t (t^2 - p^2 + eps) / (p t + p^2 + t^2 + eps)^2 / N_c
    d consistency / d p = 2 k (q - H) H (1 - H) / (C N)
    d consistency / d q = 2 (q - H) / (C N),  then through the softmax: dz = s (g - sum_j s_j g_j)
                          with s = softmax(z) and g = (0, d consistency / d q); through the sigmoid:
                          dz = q (1 - q) d consistency / d q

The consistency compares the two heads' predictions and needs no label, so it is never masked: on
unlabelled voxels it is the label-free coupling of dual-task consistency (Luo et al. 2021).

Why a hand-written backward: written as three autograd losses, these terms keep about eight float32
tensors of shape (B, C, *spatial) alive until the backward pass (the softmax, the Heaviside, differences,
squares, the product's denominator), at the moment the network's activations peak. This function keeps
only its inputs (the logits and the tanh output already exist, the target is needed anyway) and recomputes
the rest in backward, chunk by chunk (one batch member and a slab of the first spatial axis at a time, a
chunk size fixed by the shapes, so no host sync), so its transients stay within a chunk. Values and
gradients equal the three autograd losses (tests/losses/test_sdm_head.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from nnunet_sdm.checks import check_integer, check_positive, check_same_shape

#: channels x voxels per chunk: on the CPU cache-sized (measured 0.15 s for fwd + bwd at 2 x 14 x 40 x 96 x 80
#: against 0.32 s at 2**22 and 0.24 s for the three autograd losses); on a GPU large (few kernel launches;
#: the transients are a few float32 tensors of this size, 256 MB each at 2**26)
DEFAULT_CHUNK_CPU = 2**20
DEFAULT_CHUNK_DEVICE = 2**26


def _chunks(shape: torch.Size, channels: int, chunk_elements: int) -> Iterator[tuple]:
    """Index tuples (batch member, slab of the first spatial axis) covering ``shape`` (B, ·, n0, ...)."""
    per_slice = channels * max(1, int(torch.Size(shape[3:]).numel()))
    slab = max(1, chunk_elements // per_slice)
    for b in range(shape[0]):
        for start in range(0, shape[2], slab):
            yield (slice(b, b + 1), slice(None), slice(start, start + slab))


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


class _SDMHeadTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, sdm, target, mask, k, eps, chunk_elements, sigmoid):  # type: ignore[override]
        dtype = _compute_dtype(logits, sdm)
        num_classes = sdm.shape[1]
        sums = torch.zeros(3, num_classes, dtype=dtype, device=sdm.device)  # l2, product, consistency
        axes = (0, *range(2, sdm.ndim))
        for index in _chunks(logits.shape, logits.shape[1], chunk_elements):
            p, t = sdm[index].to(dtype), target[index].to(dtype)
            z = logits[index].to(dtype)
            q = torch.sigmoid(z) if sigmoid else torch.softmax(z, dim=1)[:, 1:]
            product = p * t
            l2 = (p - t).square_()
            ratio = product / (product + p.square() + t.square() + eps)
            if mask is not None:
                m = mask[index].to(dtype)
                l2, ratio = l2 * m, ratio * m
            sums[0] += l2.sum(axes)
            sums[1] -= ratio.sum(axes)
            sums[2] += (q - torch.sigmoid(p * -k)).square_().sum(axes)
        count = sdm.numel() // num_classes
        counts = _counts(mask, sdm, dtype, count)
        ctx.save_for_backward(logits, sdm, target, mask, counts)
        ctx.k, ctx.eps, ctx.chunk_elements, ctx.sigmoid = k, eps, chunk_elements, sigmoid
        regression = sums[:2] / counts
        return torch.stack([regression[0].sum(), regression[1].sum(), sums[2].sum() / (num_classes * count)])

    @staticmethod
    def backward(ctx, grad_terms):  # type: ignore[override]
        logits, sdm, target, mask, counts = ctx.saved_tensors
        k, eps = ctx.k, ctx.eps
        dtype = _compute_dtype(logits, sdm)
        num_classes = sdm.shape[1]
        count = sdm.numel() // num_classes
        view = (1, num_classes) + (1,) * (sdm.ndim - 2)
        g_l2 = (grad_terms[0].to(dtype) / counts).view(view)  # per class: 1 / N_c
        g_product = (grad_terms[1].to(dtype) / counts).view(view)
        g_consistency = grad_terms[2].to(dtype) / (count * num_classes)
        grad_sdm = torch.empty_like(sdm)
        grad_logits = torch.empty_like(logits)
        for index in _chunks(logits.shape, logits.shape[1], ctx.chunk_elements):
            p, t = sdm[index].to(dtype), target[index].to(dtype)
            z = logits[index].to(dtype)
            h = torch.sigmoid(p * -k)
            denominator = p * t + p.square() + t.square() + eps
            grad_p = (2 * g_l2) * (p - t)
            grad_p -= g_product * t * (t.square() - p.square() + eps) / denominator.square()
            if mask is not None:
                grad_p *= mask[index].to(dtype)
            if ctx.sigmoid:
                q = torch.sigmoid(z)
                mismatch = q - h
                grad_logits[index] = (2 * g_consistency) * mismatch * q * (1 - q)
            else:
                s = torch.softmax(z, dim=1)
                mismatch = s[:, 1:] - h
                grad_q = torch.zeros_like(s)
                grad_q[:, 1:] = (2 * g_consistency) * mismatch
                grad_logits[index] = s * (grad_q - (s * grad_q).sum(dim=1, keepdim=True))
            grad_p += (2 * k * g_consistency) * mismatch * h * (1 - h)
            grad_sdm[index] = grad_p
        return grad_logits, grad_sdm, None, None, None, None, None, None


def _counts(mask: torch.Tensor | None, sdm: torch.Tensor, dtype: torch.dtype, count: int) -> torch.Tensor:
    """Voxels counted per class (C,): all (``count``), or the mask's (at least 1), on the device."""
    if mask is None:
        return torch.full((sdm.shape[1],), float(count), dtype=dtype, device=sdm.device)
    axes = (0, *range(2, sdm.ndim))
    return mask.expand_as(sdm).sum(axes).to(dtype).clamp_min(1.0)


class SDMHeadTermsLoss(nn.Module):
    """L2, product and Heaviside-consistency terms of an SDM head next to a segmentation head (see module).

    ``forward(logits, pred_sdm, target_sdm, k, mask=None)`` takes the segmentation logits (label maps:
    B, C + 1, *spatial, background first; regions: B, C, *spatial), the tanh-bounded predicted SDMs and
    the target SDMs (B, C, *spatial, any float dtype; computed in float32 or wider), the Heaviside
    steepness ``k`` > 0 (it may differ per call, e.g. per deep-supervision scale) and an optional bool
    ``mask`` (B, C or 1, *spatial) of the voxels the regression terms count. Returns
    ``{"l2", "product", "consistency"}``, unweighted, each with its gradient into the logits and the
    predicted SDMs (none into the target).

    Args:
        regions: the logits are nnU-Net region logits (one sigmoid per SDM channel) instead of softmax
            logits with a background channel.
        eps: keeps the product loss finite where p = t = 0 (as ``ProductSDMLoss``).
        chunk_elements: channels x voxels computed at once (memory of the transients); None: 2**20 on
            the CPU, 2**26 on other devices.
    """

    def __init__(self, regions: bool = False, eps: float = 1e-6, chunk_elements: int | None = None) -> None:
        super().__init__()
        if not isinstance(regions, bool):
            raise ValueError(f"regions must be a bool, got {regions!r}")
        self.regions = regions
        self.eps = check_positive("eps", eps)
        self.chunk_elements = (
            None if chunk_elements is None else check_integer("chunk_elements", chunk_elements)
        )

    def forward(
        self,
        logits: torch.Tensor,
        pred_sdm: torch.Tensor,
        target_sdm: torch.Tensor,
        k: float,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        check_same_shape("SDMHeadTermsLoss(pred_sdm, target_sdm)", pred_sdm, target_sdm)
        channels = pred_sdm.shape[1] + (0 if self.regions else 1)
        if (
            logits.ndim != pred_sdm.ndim
            or logits.shape[0] != pred_sdm.shape[0]
            or (logits.shape[2:] != pred_sdm.shape[2:] or logits.shape[1] != channels)
        ):
            expected = "(B, C, *spatial) region logits" if self.regions else "(B, C + 1, *spatial) logits"
            raise ValueError(
                f"SDMHeadTermsLoss: expected {expected} for SDMs of shape (B, C, *spatial), "
                f"got {tuple(logits.shape)} and {tuple(pred_sdm.shape)}"
            )
        if mask is not None and (
            mask.dtype != torch.bool
            or mask.ndim != pred_sdm.ndim
            or mask.shape[0] != pred_sdm.shape[0]
            or mask.shape[2:] != pred_sdm.shape[2:]
            or mask.shape[1] not in (1, pred_sdm.shape[1])
        ):
            raise ValueError(
                f"SDMHeadTermsLoss: mask must be bool (B, C or 1, *spatial) for SDMs {tuple(pred_sdm.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        k = check_positive("k", k)
        chunk = self.chunk_elements or (
            DEFAULT_CHUNK_CPU if logits.device.type == "cpu" else DEFAULT_CHUNK_DEVICE
        )
        terms = _SDMHeadTerms.apply(
            logits, pred_sdm, target_sdm.detach(), mask, k, self.eps, chunk, self.regions
        )
        return dict(zip(("l2", "product", "consistency"), terms.unbind()))
