"""The deep 3D U-Net backbone of Xue et al. (AAAI 2020) as an nnU-Net network class.

Xue et al.: 6 down-samplings, 24 features in the first stage doubling to at most 384, LeakyReLU, group
normalisation, and trilinear up-sampling followed by a convolution instead of transposed convolutions.
nnU-Net's ``PlainConvUNet`` expresses all of this from the plans except two things, which this module
adds:

- :class:`XueUNet`: ``PlainConvUNet`` with one more constructor keyword, ``upsampling``:
  ``"linear"`` (trilinear in 3D, bilinear in 2D, ``align_corners=False``, then a convolution with
  the kernel size of the stage it joins, bias as the plans' ``conv_bias``, no norm or non-linearity,
  like nnU-Net's transposed convolution it replaces) or ``"transposed_conv"`` (exactly
  ``PlainConvUNet``). The up-sampling modules sit where nnU-Net's are, in ``decoder.transpconvs``, so
  nnU-Net's decoder forward, ``decoder.deep_supervision`` (``set_deep_supervision_enabled``),
  ``decoder.seg_layers`` (skipped by ``-pretrained_weights``) and the ``encoder``/``decoder``
  structure that :class:`~nnunet_sdm.network.SDMHeadNetwork` wraps are unchanged.
- :class:`GroupNorm`: ``torch.nn.GroupNorm`` with the channel count first, because nnU-Net's building
  blocks call ``norm_op(num_channels, **norm_op_kwargs)`` (``torch.nn.GroupNorm(num_groups,
  num_channels)`` would get the channels as the number of groups). Plans:
  ``"norm_op": "nnunet_sdm.network.xue_unet.GroupNorm", "norm_op_kwargs": {"num_groups": 8, ...}``.

``nnUNetTrainer.build_network_architecture`` (and so the predictor) builds both from the plans with
``get_network_from_plans`` like any nnU-Net network; ``nnunet-sdm plans apply`` writes such plans
(``plans_overrides/xue2020_deep_unet.json``).
"""

from __future__ import annotations

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from torch import nn

UPSAMPLING_MODES = ("linear", "transposed_conv")


class GroupNorm(nn.GroupNorm):
    """``torch.nn.GroupNorm(num_groups, num_channels)`` called as nnU-Net calls its norms: channels first."""

    def __init__(
        self, num_channels: int, num_groups: int = 8, eps: float = 1e-5, affine: bool = True
    ) -> None:
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_groups} groups do not divide {num_channels} channels")
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)


class UpsampleConv(nn.Module):
    """Linear interpolation by ``scale`` followed by a convolution (Xue et al.'s replacement of deconvolution)."""

    def __init__(self, conv_op, in_channels: int, out_channels: int, scale, kernel_size, bias: bool) -> None:
        super().__init__()
        dim = convert_conv_op_to_dim(conv_op)
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dim]
        scale = tuple(int(s) for s in (scale if isinstance(scale, (list, tuple)) else [scale] * dim))
        kernel_size = tuple(
            int(k) for k in (kernel_size if isinstance(kernel_size, (list, tuple)) else [kernel_size] * dim)
        )
        self.upsample = nn.Upsample(scale_factor=scale, mode=mode, align_corners=False)
        self.conv = conv_op(
            in_channels, out_channels, kernel_size, 1, padding=[(k - 1) // 2 for k in kernel_size], bias=bias
        )

    def forward(self, x):
        return self.conv(self.upsample(x))


class XueUNet(PlainConvUNet):
    """nnU-Net's ``PlainConvUNet`` with interpolation + convolution up-sampling (``upsampling="linear"``)."""

    def __init__(self, *args, upsampling: str = "linear", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"XueUNet: upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
        self.upsampling = upsampling
        if upsampling == "transposed_conv":
            return
        encoder, decoder = self.encoder, self.decoder
        channels = encoder.output_channels
        modules = []
        for s in range(1, len(channels)):
            modules.append(
                UpsampleConv(
                    encoder.conv_op,
                    channels[-s],
                    channels[-(s + 1)],
                    encoder.strides[-s],
                    encoder.kernel_sizes[-(s + 1)],
                    bias=encoder.conv_bias,
                )
            )
        # nnU-Net's attribute name, so that its decoder forward and checkpoints' layout stay as they are
        decoder.transpconvs = nn.ModuleList(modules)

    @staticmethod
    def initialize(module):
        PlainConvUNet.initialize(module)
