"""Argument checks and container helpers shared by the distance modules (numpy and torch)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch

from nnunet_sdm.checks import check_choice

ArrayLike = Union[np.ndarray, torch.Tensor]

BACKENDS = ("auto", "edt", "torch")


def check_spacing(spacing: Any) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of 2 or 3 positive finite floats (mm per array axis)."""
    try:
        values = tuple(float(s) for s in spacing)
    except TypeError as exc:
        raise ValueError(
            f"spacing must be a sequence of 2 or 3 numbers (mm per axis), got {spacing!r}"
        ) from exc
    if len(values) not in (2, 3):
        raise ValueError(f"spacing must have 2 (2D) or 3 (3D) entries, got {len(values)}: {spacing!r}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing entries must be finite and > 0 (mm), got {spacing!r}")
    return values


def check_classes(classes: Any) -> tuple[int, ...]:
    """Return ``classes`` as a non-empty tuple of distinct Python ints."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray, torch.Tensor)):
        raise ValueError(f"classes must be a sequence of int label values, got {classes!r}")
    try:
        values = tuple(
            operator.index(c) if not isinstance(c, torch.Tensor) else int(c.item()) for c in classes
        )
    except TypeError as exc:
        raise ValueError(f"classes must contain integer label values only, got {list(classes)!r}") from exc
    if len(values) == 0:
        raise ValueError("classes must contain at least one label value, got an empty sequence")
    if len(set(values)) != len(values):
        raise ValueError(f"classes must not contain duplicates, got {list(values)!r}")
    return values


def check_backend(backend: Any) -> str:
    return check_choice("backend", backend, BACKENDS)


def check_array(x: Any, name: str) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def is_integer_or_bool(x: ArrayLike) -> bool:
    if isinstance(x, torch.Tensor):
        return not (x.is_floating_point() or x.is_complex())
    return x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer)


def batched_flag(x: ArrayLike, name: str, unbatched_ndim: int, layout: str, context: str) -> bool:
    """True if ``x`` has a leading batch axis (``unbatched_ndim + 1`` dims), False if ``unbatched_ndim``."""
    if x.ndim == unbatched_ndim:
        return False
    if x.ndim == unbatched_ndim + 1:
        return True
    raise ValueError(
        f"{name} must have shape {layout} or (B, {layout[1:]} i.e. {unbatched_ndim} or {unbatched_ndim + 1} "
        f"dims for {context}, got shape {tuple(x.shape)}"
    )


def check_spatial_shape(shape: Sequence[int], name: str) -> None:
    if any(n < 1 for n in shape):
        raise ValueError(f"{name} has an empty spatial axis: spatial shape {tuple(shape)}")


def diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal length of the array in mm, ``sqrt(sum((n_i * s_i)**2))``.

    This is the value used for "no boundary in the array" (class absent: +D, class filling: -D). It is
    finite and strictly larger than any distance between two voxel centres of the array.
    """
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def as_tensor(x: ArrayLike) -> tuple[torch.Tensor, Callable[[torch.Tensor], ArrayLike]]:
    """View ``x`` as a tensor and return a function that converts a result back to ``x``'s container.

    numpy arrays are shared with ``torch.from_numpy`` (no copy) and results come back as numpy; tensors
    pass through unchanged. This lets one torch implementation serve both containers.
    """
    if isinstance(x, torch.Tensor):
        return x, lambda t: t
    return torch.from_numpy(np.ascontiguousarray(x)), lambda t: t.numpy()


def as_numpy(x: ArrayLike) -> tuple[np.ndarray, Callable[[np.ndarray], ArrayLike]]:
    """``x`` as a numpy array (tensors are copied to the CPU) and a function that converts a numpy
    result back to ``x``'s container and device."""
    if isinstance(x, torch.Tensor):
        device = x.device
        return x.detach().cpu().numpy(), lambda a: torch.from_numpy(a).to(device)
    return x, lambda a: a
