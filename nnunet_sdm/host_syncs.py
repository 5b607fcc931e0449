"""Count the calls that make the host wait for the device (or give data-dependent shapes) in a block.

On CUDA, ``.item()``, ``.tolist()``, ``bool(tensor)``, ``.cpu()``, ``nonzero`` and boolean-mask indexing
all block the Python thread until the device has caught up, so a training step that makes them cannot
queue its kernels ahead. The same calls can be counted on the CPU, where they cost nothing, so a test or
benchmark on a machine without a GPU can still prove that a code path would not stall one:

    with HostSyncCounter() as syncs:
        targets = make_targets(labels)
    assert syncs.count == 0, syncs.calls
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

_TENSOR_SYNCS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
    torch.Tensor.nonzero,
    torch.Tensor.argwhere,
    torch.Tensor.masked_select,
    torch.Tensor.unique,
}
_FUNCTION_SYNCS = {torch.nonzero, torch.argwhere, torch.masked_select, torch.unique, torch.unique_consecutive}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _to_host(args, kwargs) -> bool:
    """``tensor.to(...)`` that moves data from a device to the CPU (``.cpu()`` and ``.numpy()`` are
    counted on any tensor: on the training path they would read a device tensor back)."""
    if not isinstance(args[0], torch.Tensor) or args[0].device.type == "cpu":
        return False
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if isinstance(target, (str, torch.device)):
        return torch.device(target).type == "cpu"
    return False


class HostSyncCounter(TorchFunctionMode):
    """A torch function mode that counts host syncs by name (``calls``) and in total (``count``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func in _TENSOR_SYNCS or func in _FUNCTION_SYNCS:
            self.calls[name] += 1
        elif func in _INDEXING and len(args) > 1 and _bool_index(args[1]):
            self.calls[f"{name}[bool mask]"] += 1
        elif func is torch.Tensor.to and _to_host(args, kwargs):
            self.calls["to(cpu)"] += 1
        return func(*args, **kwargs)
