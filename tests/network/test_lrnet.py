"""The LR-Net of Li et al.: shapes, ReLU output, freezing, and that it can learn a mask -> NI-DM mapping."""

import pytest
import torch
from torch import nn

from nnunet_sdm.distance import ni_dm
from nnunet_sdm.losses.map_dice import SmoothL1MapLoss
from nnunet_sdm.network.lrnet import LRNet, freeze


@pytest.mark.parametrize(
    ("conv_op", "shape"),
    [(nn.Conv3d, (5, 7, 9)), (nn.Conv3d, (8, 8, 8)), (nn.Conv2d, (11, 6)), (nn.Conv2d, (1, 5))],
)
def test_output_shape_follows_the_input_for_any_size(conv_op, shape):
    net = LRNet(3, 2, conv_op=conv_op, features=4)
    out = net(torch.rand(2, 3, *shape))
    assert out.shape == (2, 2, *shape)
    assert (out >= 0).all()


def test_relu_output_layer():
    net = LRNet(2, 1, conv_op=nn.Conv2d, features=4)
    with torch.no_grad():
        net.output.bias.fill_(-100.0)
        assert torch.equal(net(torch.rand(1, 2, 8, 8)), torch.zeros(1, 1, 8, 8))
        net.output.bias.fill_(100.0)
        assert (net(torch.rand(1, 2, 8, 8)) > 0).all()


def test_one_down_and_one_up_sampling():
    net = LRNet(2, 1, conv_op=nn.Conv3d, features=4)
    strided = [m for m in net.modules() if isinstance(m, nn.Conv3d) and m.stride != (1, 1, 1)]
    transposed = [m for m in net.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert len(strided) == 1 and strided[0].stride == (2, 2, 2)
    assert len(transposed) == 1 and transposed[0].stride == (2, 2, 2)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="conv_op"):
        LRNet(2, 1, conv_op=nn.Conv1d)
    with pytest.raises(ValueError, match="features"):
        LRNet(2, 1, features=0)
    with pytest.raises(ValueError, match="expected"):
        LRNet(2, 1, conv_op=nn.Conv2d)(torch.rand(1, 3, 8, 8))


def test_frozen_lrnet_passes_gradients_to_the_logits_only():
    torch.manual_seed(0)
    net = freeze(LRNet(3, 2, conv_op=nn.Conv3d, features=4))
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    logits = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    target = torch.rand(2, 2, 6, 6, 6)
    loss = SmoothL1MapLoss()(net(torch.softmax(logits, 1)), target)
    loss.backward()
    assert all(p.grad is None for p in net.parameters())
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    optimizer = torch.optim.SGD([logits], lr=1.0)
    optimizer.step()
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_learns_the_ni_dm_of_squares():
    """A few Adam steps on one-hot squares reduce the smooth L1 to their NI-DM (the paper's pre-training)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend on a busy machine
    try:
        _learn_squares()
    finally:
        torch.set_num_threads(threads)


def _learn_squares():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(8, 24, 24, dtype=torch.long)
    for i in range(8):
        y, x = torch.randint(2, 14, (2,), generator=generator).tolist()
        size = int(torch.randint(3, 9, (1,), generator=generator))
        labels[i, y : y + size, x : x + size] = 1
    phi = ni_dm(labels, (1.0, 1.0), [1])
    onehot = nn.functional.one_hot(labels, 2).movedim(-1, 1).float()
    net = LRNet(2, 1, conv_op=nn.Conv2d, features=8)
    loss_fn = SmoothL1MapLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = loss_fn(net(onehot), phi).item()
    for _ in range(150):
        loss = loss_fn(net(onehot), phi)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
