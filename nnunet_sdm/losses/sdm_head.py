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
the rest in backward, chunk by chunk (whole batch members when they fit, else one member and a slab of the
first spatial axis at a time; a chunk size fixed by the shapes, so no host sync), so its transients stay
within a chunk. About 30 operators per chunk, forward and backward together (every one a kernel launch on a
GPU): the per-class sums are stacked into one (3, C) tensor and the denominator is written as
``(p - t)^2 + 3 p t``. Values and gradients equal the three autograd losses (tests/losses/test_sdm_head.py).
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_sdm.checks import check_integer, check_positive, check_same_shape

#: channels x voxels per chunk: on the CPU cache-sized (measured 0.15 s for fwd + bwd at 2 x 14 x 40 x 96 x 80
#: against 0.32 s at 2**22 and 0.24 s for the three autograd losses); on a GPU large (few kernel launches;
#: the transients are a few float32 tensors of this size, 256 MB each at 2**26)
DEFAULT_CHUNK_CPU = 2**20
DEFAULT_CHUNK_DEVICE = 2**26


def _chunks(shape: torch.Size, channels: int, chunk_elements: int) -> list[tuple]:
    """Index tuples covering ``shape`` (B, ·, n0, ...): groups of whole batch members when one fits in
    ``chunk_elements`` (one chunk for the whole batch on an accelerator), else one member and a slab of
    the first spatial axis at a time."""
    per_slice = channels * max(1, int(torch.Size(shape[3:]).numel()))
    per_member = per_slice * shape[2]
    if per_member <= chunk_elements:
        group = chunk_elements // per_member
        return [(slice(b, b + group),) for b in range(0, shape[0], group)]
    slab = max(1, chunk_elements // per_slice)
    return [
        (slice(b, b + 1), slice(None), slice(start, start + slab))
        for b in range(shape[0])
        for start in range(0, shape[2], slab)
    ]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is, else float32 (half inputs are computed in float32)."""
    return torch.float64 if any(tensor.dtype == torch.float64 for tensor in tensors) else torch.float32


def _class_weights(mask: torch.Tensor | None, sdm: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(3, C): what the per-class sums of ``(p - t)^2``, ``p t / den`` and ``(q - H)^2`` are multiplied by
    to give the terms: ``1 / N_c``, ``-1 / N_c`` and ``1 / (C N)``, on the device (no host sync)."""
    num_classes = sdm.shape[1]
    count = sdm.numel() // num_classes
    if mask is None:
        inverse = torch.full((num_classes,), 1.0 / count, dtype=dtype, device=sdm.device)
    else:
        axes = (0, *range(2, sdm.ndim))
        inverse = mask.expand_as(sdm).sum(axes).to(dtype).clamp_min_(1.0).reciprocal_()
    consistency = torch.full_like(inverse, 1.0 / (count * num_classes))
    return torch.stack([inverse, -inverse, consistency])


class _SDMHeadTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, sdm, target, mask, k, eps, chunk_elements, sigmoid):  # type: ignore[override]
        dtype = _compute_dtype(logits, sdm)
        axes = (0, *range(2, sdm.ndim))
        sums = None  # (3, C): per class, the sums of (p - t)^2, p t / den and (q - H)^2
        for index in _chunks(logits.shape, logits.shape[1], chunk_elements):
            p, t = sdm[index].to(dtype), target[index].to(dtype)
            z = logits[index].to(dtype)
            q = torch.sigmoid(z) if sigmoid else torch.softmax(z, dim=1)[:, 1:]
            ratio = p * t
            l2 = (p - t).square_()
            # p t + p^2 + t^2 = (p - t)^2 + 3 p t: two kernels fewer than the sum of squares
            ratio.div_(torch.add(l2, ratio, alpha=3.0).add_(eps))
            if mask is not None:
                m = mask[index].to(dtype)
                l2.mul_(m)
                ratio.mul_(m)
            mismatch = q - torch.sigmoid(p * -k)
            chunk_sums = torch.stack([l2.sum(axes), ratio.sum(axes), mismatch.square_().sum(axes)])
            sums = chunk_sums if sums is None else sums.add_(chunk_sums)
        weights = _class_weights(mask, sdm, dtype)
        ctx.save_for_backward(logits, sdm, target, mask, weights)
        ctx.k, ctx.eps, ctx.chunk_elements, ctx.sigmoid = k, eps, chunk_elements, sigmoid
        return sums.mul_(weights).sum(1)

    @staticmethod
    def backward(ctx, grad_terms):  # type: ignore[override]
        logits, sdm, target, mask, weights = ctx.saved_tensors
        k, eps = ctx.k, ctx.eps
        dtype = _compute_dtype(logits, sdm)
        view = (3, 1, sdm.shape[1]) + (1,) * (sdm.ndim - 2)
        # per class: d l2 / d (p - t)^2, d product / d ratio, d consistency / d (q - H)^2 (then x 2)
        g_l2, g_product, g_consistency = (grad_terms.to(dtype)[:, None] * weights).view(view).unbind()
        minus_g_product = g_product.neg()
        chunks = _chunks(logits.shape, logits.shape[1], ctx.chunk_elements)
        grad_sdm = torch.empty_like(sdm) if len(chunks) > 1 else None
        grad_logits = torch.empty_like(logits) if len(chunks) > 1 else None
        for index in chunks:
            p, t = sdm[index].to(dtype), target[index].to(dtype)
            z = logits[index].to(dtype)
            difference = p - t
            # d ratio / d p = t (t^2 - p^2 + eps) / den^2 = t (eps - (p - t)(p + t)) / den^2
            grad_p = torch.add(p, t).mul_(difference).sub_(eps).mul_(t)
            denominator = torch.add(difference.square(), p * t, alpha=3.0).add_(eps)
            grad_p.div_(denominator.square_()).mul_(minus_g_product)
            grad_p.addcmul_(difference, g_l2, value=2.0)
            if mask is not None:
                grad_p.mul_(mask[index].to(dtype))
            h = torch.sigmoid(p * -k)
            if ctx.sigmoid:
                q = torch.sigmoid(z)
                mismatch = (q - h).mul_(g_consistency)  # half of d consistency / d q
                grad_z = torch.mul(q, 1 - q).mul_(mismatch).mul_(2.0)
            else:
                s = torch.softmax(z, dim=1)
                mismatch = (s[:, 1:] - h).mul_(g_consistency)
                # through the softmax: dz = s (g - sum_j s_j g_j) with g = (0, 2 mismatch)
                weighted = s[:, 1:] * mismatch
                grad_z = s * weighted.sum(dim=1, keepdim=True).mul_(-2.0)
                grad_z[:, 1:].add_(weighted, alpha=2.0)
            # d consistency / d p = 2 k (q - H) H (1 - H) x the class weight (in mismatch)
            grad_p.addcmul_(mismatch, torch.sub(h, h.square()), value=2.0 * k)
            if grad_sdm is None:
                return grad_z.to(logits.dtype), grad_p.to(sdm.dtype), None, None, None, None, None, None
            grad_logits[index] = grad_z
            grad_sdm[index] = grad_p
        return grad_logits, grad_sdm, None, None, None, None, None, None


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
