"""The light weight regression network (LR-Net) of Li et al., section 2.2.

The LR-Net maps class probabilities (softmax of the segmentation network, or one-hot ground truth
while it is pre-trained) to one NI-DM channel per foreground class. The paper fixes only: a light
U-Net whose encoder has one down-sampling that halves the feature maps, a decoder with one
up-sampling back to the input size, and a ReLU output layer (NI-DM is >= 0). The rest is our choice,
kept small:

    input (C_in) -> [conv3 - IN - LReLU] x2 (F)                      full resolution  --skip--+
                 -> conv3 stride 2 - IN - LReLU, conv3 - IN - LReLU (2F)   half resolution   |
                 -> transposed conv 2 (F), cropped to the skip's size                 |
                 -> concat(skip) -> [conv3 - IN - LReLU] x2 (F) -> conv1 (K) -> ReLU   <-----+

``conv_op`` (``nn.Conv2d`` or ``nn.Conv3d``) selects 2D or 3D; the norm is the matching affine
instance norm (no running statistics, so train and eval mode compute the same function). Any input
size works (odd sizes are cropped back after the up-sampling). The receptive field is under 20 voxels
at full resolution: NI-DM divides by the component's maximum depth, so components much thicker than
that are beyond what a light network can see; the paper targets small tumours.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nnunet_sdm.checks import check_integer

_NORMS = {nn.Conv2d: nn.InstanceNorm2d, nn.Conv3d: nn.InstanceNorm3d}
_TRANSPOSED = {nn.Conv2d: nn.ConvTranspose2d, nn.Conv3d: nn.ConvTranspose3d}


def _block(conv_op, in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        conv_op(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        _NORMS[conv_op](out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class LRNet(nn.Module):
    """Light U-Net with one down- and one up-sampling and a ReLU output (Li et al., section 2.2).

    Args:
        in_channels: number of input probability channels (background + foreground classes).
        out_channels: number of NI-DM channels (foreground classes).
        conv_op: ``nn.Conv2d`` or ``nn.Conv3d``.
        features: channels at full resolution (twice that at half resolution).
    """

    def __init__(
        self, in_channels: int, out_channels: int, conv_op: type[nn.Module] = nn.Conv3d, features: int = 16
    ):
        super().__init__()
        if conv_op not in _NORMS:
            raise ValueError(f"LRNet: conv_op must be nn.Conv2d or nn.Conv3d, got {conv_op!r}")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("features", features),
        ):
            check_integer(f"LRNet: {name}", value)
        self.conv_op = conv_op
        self.spatial_dims = 3 if conv_op is nn.Conv3d else 2
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.encoder = nn.Sequential(
            _block(conv_op, in_channels, features), _block(conv_op, features, features)
        )
        self.bottleneck = nn.Sequential(
            _block(conv_op, features, 2 * features, stride=2),  # the one down-sampling
            _block(conv_op, 2 * features, 2 * features),
        )
        self.up = _TRANSPOSED[conv_op](2 * features, features, kernel_size=2, stride=2)  # the one up-sampling
        self.decoder = nn.Sequential(
            _block(conv_op, 2 * features, features), _block(conv_op, features, features)
        )
        self.output = conv_op(features, out_channels, kernel_size=1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_uniform_(module.weight, a=0.01)  # the paper initialises with Kaiming uniform
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"LRNet: expected (B, {self.in_channels}, *{self.spatial_dims} spatial dims), got {tuple(x.shape)}"
            )
        skip = self.encoder(x)
        up = self.up(self.bottleneck(skip))
        # the stride-2 convolution rounds odd sizes up (n -> ceil(n / 2) -> 2 ceil(n / 2) >= n): crop back
        up = up[(slice(None), slice(None), *(slice(0, s) for s in skip.shape[2:]))]
        return F.relu(self.output(self.decoder(torch.cat((up, skip), dim=1))))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad = False`` for every parameter; gradients still flow to the input."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
