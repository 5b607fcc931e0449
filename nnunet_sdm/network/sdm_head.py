"""An SDM head on nnU-Net's own networks, switched between training and inference outputs.

The backbone is the network nnU-Net builds from the plans, with extra output channels: its 1x1 output
convolutions at every decoder stage (and so every deep-supervision output) produce
``num_seg_channels`` segmentation logits followed by ``num_sdm_channels`` raw SDM values, one per
foreground class, bounded by tanh to [-1, 1] (Xue et al. 2020).

Two output modes:
- ``return_sdm = False`` (the default, and what nnU-Net's predictor gets): segmentation logits only,
  one tensor (or a list with deep supervision) with exactly ``num_segmentation_heads`` channels, as
  the stock predictor expects. A network without a segmentation head turns its SDMs into logits
  ``[0, -s * sdm_1, ..., -s * sdm_K]``: argmax is then the Heaviside of the SDM (background where every
  SDM is positive, else the class deepest inside), and |logit| <= s = 64 keeps nnU-Net's fp16
  accumulation (Gaussian weight up to 10, up to 8 overlapping tiles) far below the fp16 maximum.
- ``return_sdm = True`` (set by the trainers around their own forward passes): :class:`SDMOutput`
  tuples carrying both heads.

The wrapper registers the backbone's children under their own names, so the state_dict keys are the
stock network's (``encoder.*``, ``decoder.*``): checkpoints load strictly in the predictor, and
``-pretrained_weights`` from a stock nnUNetTrainer checkpoint transfers everything but the 1x1
``seg_layers``, which nnU-Net skips anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

SDM_LOGIT_SCALE = 64.0


class SDMOutput(NamedTuple):
    """One output scale: segmentation logits (or None) and tanh-bounded SDMs (or None)."""

    seg: torch.Tensor | None
    sdm: torch.Tensor | None


#: the SDM channels' activation: Xue et al.'s tanh (bounded to [-1, 1]), or none ("linear": a regression
#: output whose gradient never vanishes; the flagship's, see nnunet_sdm.training.sdm)
SDM_ACTIVATIONS = ("tanh", "linear")


class SDMHeadNetwork(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        num_seg_channels: int,
        num_sdm_channels: int,
        sdm_activation: str = "tanh",
    ) -> None:
        super().__init__()
        if num_seg_channels < 0 or num_sdm_channels < 0 or num_seg_channels + num_sdm_channels == 0:
            raise ValueError(
                f"SDMHeadNetwork needs segmentation or SDM channels, got {num_seg_channels} and {num_sdm_channels}"
            )
        if sdm_activation not in SDM_ACTIVATIONS:
            raise ValueError(f"sdm_activation must be one of {SDM_ACTIVATIONS}, got {sdm_activation!r}")
        self.sdm_activation = sdm_activation
        for name, child in backbone.named_children():
            self.add_module(name, child)
        # Not registered as a submodule: its parameters are the children registered above, and its
        # keys must not appear twice (or with a prefix) in the state_dict.
        object.__setattr__(self, "_backbone", backbone)
        self.num_seg_channels = num_seg_channels
        self.num_sdm_channels = num_sdm_channels
        self.return_sdm = False

    def forward(self, x: torch.Tensor):
        raw = self._backbone(x)
        if isinstance(raw, (list, tuple)):
            return [self._heads(r) for r in raw]
        return self._heads(raw)

    def _heads(self, raw: torch.Tensor):
        out = self.split(raw)
        return out if self.return_sdm else self.logits(out)

    def split(self, raw: torch.Tensor) -> SDMOutput:
        if not self.num_sdm_channels:
            seg, sdm = raw, None
        elif not self.num_seg_channels:
            seg, sdm = None, raw
        else:
            # one split, not two slices: its backward concatenates the two gradients into one tensor,
            # where each slice's would allocate a zero-filled tensor of the whole output and then add them
            seg, sdm = torch.split(raw, [self.num_seg_channels, self.num_sdm_channels], dim=1)
        if sdm is not None and self.sdm_activation == "tanh":
            sdm = torch.tanh(sdm)
        return SDMOutput(seg, sdm)

    def logits(self, out: SDMOutput) -> torch.Tensor:
        """Segmentation logits of one output: the segmentation head, or the Heaviside of the SDM."""
        if out.seg is not None:
            return out.seg
        background = torch.zeros_like(out.sdm[:, :1])
        return torch.cat((background, -SDM_LOGIT_SCALE * out.sdm), dim=1)


class _RowScaledInputGradientConv(torch.autograd.Function):
    """A convolution whose gradient into its INPUT counts output row ``r`` with ``row_scale[r]``; its
    value and its weight and bias gradients are the plain convolution's.

    The backward is one ``aten.convolution_backward`` call (the kernel autograd uses for any
    convolution) with the weight rows scaled for the input gradient only: the weight gradient
    ``g (x) x`` does not involve the weight. Dtypes follow the incoming gradient, as under autocast.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, row_scale, stride, padding):  # type: ignore[override]
        ctx.save_for_backward(x, weight, row_scale)
        ctx.has_bias, ctx.stride, ctx.padding = bias is not None, stride, padding
        return _CONV[weight.ndim - 2](x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, row_scale = ctx.saved_tensors
        spatial = weight.ndim - 2
        scaled = (weight * row_scale.view(-1, *([1] * (weight.ndim - 1)))).to(grad.dtype)
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad,
            x.to(grad.dtype),
            scaled,
            [weight.shape[0]] if ctx.has_bias else None,
            list(ctx.stride),
            list(ctx.padding),
            [1] * spatial,
            False,
            [0] * spatial,
            1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
        )
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        grad_bias = None if grad_bias is None else grad_bias.to(weight.dtype)
        return grad_input, grad_weight, grad_bias, None, None, None


_CONV = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}


class SplitOutputConv(nn.Module):
    """A 1x1 output convolution with segmentation rows ``[:num_seg]`` and SDM rows ``[num_seg:]``.

    Its ``weight`` and ``bias`` are the convolution's (the state_dict keys stay nnU-Net's). The forward
    value is the plain convolution's; only the gradient that the SDM rows send to the features below is
    multiplied by ``trunk_gradient_scale`` (the rows themselves always get their full gradient). A trainer
    can so let a fresh SDM head learn at full rate while its pull on the shared network ramps in.

    One convolution forward and one convolution backward, as stock's output layer (measured: two
    convolutions for the two row groups cost 0.56 s against 0.33 s at 2 x 32 x 40 x 96 x 80 on 2 CPU
    cores). The scale is a 0-d buffer (not in the state_dict), not a Python float: changing it every
    epoch changes no guard of ``torch.compile`` (which nnU-Net applies to the network on GPUs), so the
    ramp causes no recompilation.
    """

    def __init__(self, conv: nn.Module, num_seg: int) -> None:
        super().__init__()
        if tuple(conv.kernel_size) != (1,) * len(conv.kernel_size) or conv.groups != 1:
            raise ValueError(f"SplitOutputConv takes a 1x1 convolution without groups, got {conv}")
        self.weight = conv.weight
        self.bias = conv.bias
        self.num_seg = num_seg
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        self.register_buffer(
            "trunk_gradient_scale", torch.ones((), device=conv.weight.device), persistent=False
        )

    def row_scale(self) -> torch.Tensor:
        """1 for the segmentation rows, ``trunk_gradient_scale`` for the SDM rows (a tensor op, no sync)."""
        rows = torch.arange(self.weight.shape[0], device=self.weight.device)
        one = torch.ones((), device=self.weight.device)
        return torch.where(rows < self.num_seg, one, self.trunk_gradient_scale.to(self.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return _CONV[self.weight.ndim - 2](x, self.weight, self.bias, self.stride, self.padding)
        return _RowScaledInputGradientConv.apply(
            x, self.weight, self.bias, self.row_scale(), self.stride, self.padding
        )


def add_output_channels(backbone: nn.Module, extra_channels: int) -> nn.Module:
    """Append ``extra_channels`` output rows to every 1x1 output layer (``decoder.seg_layers``), in place.

    The backbone was built (and initialised) with the stock channel count, so its weights, the
    segmentation rows of the output layers included, are exactly the ones ``nnUNetTrainer`` gets from
    the same random state (the widened layers still draw from the generator, with the backbone's own
    ``initialize``, as before). The new rows start at zero: an SDM of 0, where tanh has its full
    gradient. The widened layers are :class:`SplitOutputConv`. Returns the backbone.
    """
    if extra_channels < 0:
        raise ValueError(f"extra_channels must be >= 0, got {extra_channels}")
    layers = getattr(getattr(backbone, "decoder", None), "seg_layers", None)
    if layers is None:
        raise ValueError(f"{type(backbone).__name__} has no decoder.seg_layers to add output channels to")
    if extra_channels == 0:
        return backbone
    initialize = getattr(backbone, "initialize", None)
    for i, old in enumerate(layers):
        new = type(old)(
            old.in_channels,
            old.out_channels + extra_channels,
            old.kernel_size,
            old.stride,
            old.padding,
            bias=old.bias is not None,
        ).to(device=old.weight.device, dtype=old.weight.dtype)
        if initialize is not None:
            initialize(new)  # keeps the random stream of earlier versions; the new rows are zeroed below
        with torch.no_grad():
            new.weight[: old.out_channels] = old.weight
            if old.bias is not None:
                new.bias[: old.out_channels] = old.bias
            # SDM rows start at 0 (tanh'(0) = 1). He-initialised rows on trained (warm-start) features
            # start deep in tanh's saturation, where the gradient vanishes: the head then stays at +1
            # everywhere (measured, docs/diagnosis.md), so nothing of the distance terms reaches the segmentation.
            new.weight[old.out_channels :] = 0.0
            if new.bias is not None:
                new.bias[old.out_channels :] = 0.0
        layers[i] = SplitOutputConv(new, old.out_channels)
    return backbone


def set_sdm_trunk_gradient_scale(network: nn.Module, scale: float) -> None:
    """Scale the gradient that the SDM rows of every :class:`SplitOutputConv` send to the shared network."""
    if not (0.0 <= scale <= 1.0):
        raise ValueError(f"scale must be in [0, 1], got {scale!r}")
    for module in unwrap(network).modules():
        if isinstance(module, SplitOutputConv):
            module.trunk_gradient_scale.fill_(float(scale))  # in place: no new guard for torch.compile


def load_warm_start(
    network: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint"
) -> int:
    """Load every weight of ``state_dict`` into ``network``, the 1x1 output layers included (in place).

    Unlike nnU-Net's ``-pretrained_weights``, which re-initialises the output layers, this continues a
    trained model: output layers of the same shape are copied, and where the network has more output rows
    than the checkpoint (a stock nnUNetTrainer checkpoint into a network with an SDM head) the
    checkpoint's rows fill the first ones (the segmentation logits) and the others keep their
    initialisation. Where it has fewer (an SDM-only network, whose rows are SDMs, not logits) its output
    layers keep their initialisation, as with ``-pretrained_weights``. Any other mismatch raises
    ValueError naming ``source`` and the key. Returns the number of output rows that kept their
    initialisation.
    """
    module = unwrap(network)
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    if missing:
        raise ValueError(f"{source}: no weights for {len(missing)} key(s) of the network, e.g. {missing[:3]}")
    new_rows = 0
    merged = {}
    for key, mine in own.items():
        theirs = state_dict[key]
        if theirs.shape == mine.shape:
            merged[key] = theirs
        elif ".seg_layers." in key and theirs.shape[1:] == mine.shape[1:]:
            # fewer rows: stock logits into a network with SDM rows after them; more: an SDM-only network
            kept = theirs.shape[0] if theirs.shape[0] < mine.shape[0] else 0
            merged[key] = torch.cat((theirs[:kept].to(mine.dtype), mine[kept:].cpu()), dim=0)
            new_rows += mine.shape[0] - kept if key.endswith(".weight") else 0
        else:
            raise ValueError(
                f"{source}: weight {key} has shape {tuple(theirs.shape)}, the network's {tuple(mine.shape)}; "
                "the checkpoint is of another network (other plans or configuration?)"
            )
    module.load_state_dict(merged)
    return new_rows


def unwrap(network: nn.Module) -> nn.Module:
    """The module under DDP's ``.module`` and torch.compile's ``._orig_mod`` wrappers."""
    while True:
        if hasattr(network, "module") and isinstance(network.module, nn.Module):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


@contextmanager
def sdm_outputs(network: nn.Module) -> Iterator[None]:
    """Make the (possibly wrapped) SDM network return :class:`SDMOutput` tuples inside the block."""
    inner = unwrap(network)
    previous = inner.return_sdm
    inner.return_sdm = True
    try:
        yield
    finally:
        inner.return_sdm = previous
