"""The SDM head wrapper: stock state_dict keys, inference logits, Heaviside at argmax."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_sdm.network import SDM_LOGIT_SCALE, SDMHeadNetwork, SDMOutput, sdm_outputs


def tiny_unet(out_channels: int, deep_supervision: bool = True) -> PlainConvUNet:
    return PlainConvUNet(
        input_channels=1,
        n_stages=3,
        features_per_stage=[4, 8, 16],
        conv_op=nn.Conv3d,
        kernel_sizes=3,
        strides=[1, 2, 2],
        n_conv_per_stage=1,
        num_classes=out_channels,
        n_conv_per_stage_decoder=1,
        conv_bias=True,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"affine": True},
        nonlin=nn.LeakyReLU,
        deep_supervision=deep_supervision,
    )


def test_state_dict_keys_are_the_stock_networks():
    backbone = tiny_unet(2)
    wrapped = SDMHeadNetwork(backbone, 0, 2)
    assert list(wrapped.state_dict()) == list(backbone.state_dict())
    stock = tiny_unet(3)
    # everything but the 1x1 seg_layers transfers from a stock network with 3 logits
    for key, value in stock.state_dict().items():
        if ".seg_layers." not in key:
            assert wrapped.state_dict()[key].shape == value.shape


def test_inference_outputs_logits_with_background_channel():
    net = SDMHeadNetwork(tiny_unet(2, deep_supervision=False), 0, 2).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 1, 8, 16, 16))
        with sdm_outputs(net):
            out = net(torch.randn(1, 1, 8, 16, 16))
    assert logits.shape == (1, 3, 8, 16, 16)
    assert logits.abs().max() <= SDM_LOGIT_SCALE
    assert isinstance(out, SDMOutput) and out.seg is None and out.sdm.shape == (1, 2, 8, 16, 16)
    assert net.return_sdm is False  # switched back


def test_argmax_of_sdm_logits_is_the_heaviside():
    net = SDMHeadNetwork(tiny_unet(2), 0, 2)
    sdm = torch.tensor([0.3, -0.2, -0.6, 0.1]).view(1, 1, 4).repeat(1, 2, 1)
    sdm[0, 1] = torch.tensor([0.5, -0.4, -0.1, 0.2])
    labels = net.logits(SDMOutput(None, sdm)).argmax(1)[0]
    # voxel 0: both positive -> background; 1: class 2 deeper (-0.4); 2: class 1 (-0.6); 3: background
    assert labels.tolist() == [0, 2, 1, 0]


def test_dual_head_inference_uses_segmentation_channels():
    net = SDMHeadNetwork(tiny_unet(3 + 2, deep_supervision=False), 3, 2).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 1, 8, 16, 16))
        with sdm_outputs(net):
            out = net(torch.randn(1, 1, 8, 16, 16))
    assert logits.shape[1] == 3
    assert out.seg.shape[1] == 3 and out.sdm.shape[1] == 2


def test_deep_supervision_outputs_every_scale():
    net = SDMHeadNetwork(tiny_unet(2), 0, 2)
    with sdm_outputs(net):
        outs = net(torch.randn(2, 1, 8, 16, 16))
    assert [o.sdm.shape[2:] for o in outs] == [(8, 16, 16), (4, 8, 8)]


def test_rejects_no_outputs():
    with pytest.raises(ValueError):
        SDMHeadNetwork(tiny_unet(1), 0, 0)


def test_split_output_conv_scales_only_the_sdm_rows_gradient_into_the_features():
    from nnunet_sdm.network.sdm_head import SplitOutputConv, set_sdm_trunk_gradient_scale

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 5, 1)
    split = SplitOutputConv(conv, num_seg=3)
    assert split.state_dict().keys() == {
        "weight",
        "bias",
    }  # nnU-Net's state_dict keys (the scale is not saved)
    x = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 5, 3, 3, 3)

    def grads(scale):
        set_sdm_trunk_gradient_scale(split, scale)
        split.zero_grad()
        x.grad = None
        out = split(x)
        torch.testing.assert_close(out, conv(x))  # the value is the convolution's
        (out * upstream).sum().backward()
        return x.grad.clone(), split.weight.grad.clone()

    full_x, full_w = grads(1.0)
    half_x, half_w = grads(0.5)
    zero_x, zero_w = grads(0.0)
    seg_only = (upstream[:, :3, None] * conv.weight[:3, :, 0, 0, 0][None, :, :, None, None, None]).sum(1)
    torch.testing.assert_close(zero_x, seg_only)  # no gradient from the SDM rows into the features
    torch.testing.assert_close(half_x, (full_x + zero_x) / 2)
    torch.testing.assert_close(half_w, full_w)  # the rows themselves always learn at full rate
    torch.testing.assert_close(zero_w, full_w)

    network = torch.nn.Sequential(split)
    set_sdm_trunk_gradient_scale(network, 0.25)
    assert float(split.trunk_gradient_scale) == 0.25
    with pytest.raises(ValueError, match="scale must be in"):
        set_sdm_trunk_gradient_scale(network, 1.5)


def test_the_ramp_does_not_recompile_a_compiled_network():
    """nnU-Net compiles the network on GPUs; the ramp changes the SDM rows' gradient scale every epoch.
    The scale is a tensor buffer, so no change of it is a new guard (dynamo's eager backend checks the
    tracing alone, quickly, on the CPU)."""
    import torch._dynamo

    from nnunet_sdm.network.sdm_head import SplitOutputConv, set_sdm_trunk_gradient_scale

    torch._dynamo.reset()
    network = torch.nn.Sequential(
        torch.nn.Conv3d(2, 4, 3, padding=1), SplitOutputConv(torch.nn.Conv3d(4, 5, 1), 3)
    )
    compiled = torch.compile(network, backend="eager")
    x = torch.randn(1, 2, 4, 4, 4)
    compiled(x).sum().backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for scale in (0.0, 0.1, 0.55, 1.0):
            set_sdm_trunk_gradient_scale(network, scale)
            network.zero_grad()
            compiled(x).sum().backward()
            eager_grad = torch.autograd.grad(network(x)[:, 3:].sum(), network[0].weight)[0]
            compiled_grad = torch.autograd.grad(compiled(x)[:, 3:].sum(), network[0].weight)[0]
            torch.testing.assert_close(compiled_grad, eager_grad)


def test_appended_sdm_rows_start_at_zero_and_the_linear_head_passes_them_through():
    """Measured on warm starts: He-initialised tanh rows saturate and stop learning; the flagship's rows start at 0, linear."""
    from nnunet_sdm.network import add_output_channels

    torch.manual_seed(0)
    backbone = add_output_channels(tiny_unet(3, deep_supervision=False), 2)
    layer = backbone.decoder.seg_layers[-1]
    weight = next(p for name, p in layer.named_parameters() if name.endswith("weight"))
    assert weight.shape[0] == 5 and weight[3:].abs().max() == 0 and weight[:3].abs().max() > 0
    linear = SDMHeadNetwork(backbone, 3, 2, sdm_activation="linear")
    raw = torch.randn(1, 5, 4, 4, 4) * 3
    assert torch.equal(linear.split(raw).sdm, raw[:, 3:])
    assert torch.equal(SDMHeadNetwork(tiny_unet(5), 3, 2).split(raw).sdm, torch.tanh(raw[:, 3:]))
    with pytest.raises(ValueError, match="sdm_activation must be one of"):
        SDMHeadNetwork(tiny_unet(5), 3, 2, sdm_activation="relu")


def test_the_flagship_builds_a_linear_head_and_the_paper_trainers_keep_tanh():
    from nnunet_sdm.training.sdm import nnUNetTrainerSDM
    from nnunet_sdm.training.wang_zhang import nnUNetTrainerSDMDualHead
    from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020

    assert nnUNetTrainerSDM.sdm_activation == "linear"
    assert (
        nnUNetTrainerSDMDualHead.sdm_activation == "tanh"
        and nnUNetTrainerSDM_Xue2020.sdm_activation == "tanh"
    )
