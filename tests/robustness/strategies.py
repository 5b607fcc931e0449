"""Hypothesis strategies shared by the robustness tests: small 2D/3D label maps, spacings, predictions.

Label maps come in the kinds that break distance code: empty (no foreground), full (one class fills the
patch), a single voxel, random noise (thin, 1-voxel structures) and blocks. Spacings include the
anisotropic 5 x 0.7 x 0.7 mm of CT/MR stacks. Predictions include the extremes a network emits: logits
of +-1e4 (fp16 overflow is at ~7e4), SDMs of exactly 0 and +-1 (tanh saturated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

LABEL_KINDS = ("empty", "full", "single_voxel", "noise", "blocks")
#: how the network's raw outputs (logits or SDMs) are drawn
PREDICTION_KINDS = ("normal", "zero", "plus_one", "minus_one", "plus_1e4", "minus_1e4", "mixed_1e4", "signs")
MASK_KINDS = (None, "random", "all_zero", "all_one")


@dataclass
class Case:
    """One random training situation: labels (B, *spatial) int64 with K foreground classes 1..K."""

    labels: torch.Tensor
    num_classes: int  # foreground classes K; labels take values 0..K
    spacing: tuple[float, ...]
    label_kind: str
    prediction_kind: str
    mask_kind: str | None
    bf16: bool
    seed: int

    @property
    def spatial_dims(self) -> int:
        return len(self.spacing)

    @property
    def classes(self) -> list[int]:
        return list(range(1, self.num_classes + 1))

    @property
    def onehot(self) -> torch.Tensor:
        return torch.stack([self.labels == c for c in self.classes], 1).float()

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def prediction(self, channels: int, requires_grad: bool = True) -> torch.Tensor:
        """A float32 leaf tensor (B, channels, *spatial) of the drawn prediction kind."""
        shape = (self.labels.shape[0], channels, *self.labels.shape[1:])
        return make_prediction(shape, self.prediction_kind, self.generator(1)).requires_grad_(requires_grad)

    def mask(self) -> torch.Tensor | None:
        """(B, 1, *spatial) float 0/1 mask of counted voxels (ignore-label style), or None."""
        shape = (self.labels.shape[0], 1, *self.labels.shape[1:])
        if self.mask_kind is None:
            return None
        if self.mask_kind == "all_zero":
            return torch.zeros(shape)
        if self.mask_kind == "all_one":
            return torch.ones(shape)
        return (torch.rand(shape, generator=self.generator(2)) > 0.5).float()

    def network_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """What a network under bf16 autocast hands to the loss: the tensor in bfloat16 (differentiably)."""
        return x.to(torch.bfloat16) if self.bf16 else x


def make_prediction(shape, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(shape, generator=generator) * 3
    if kind == "zero":
        return torch.zeros(shape)
    if kind == "plus_one":
        return torch.ones(shape)
    if kind == "minus_one":
        return -torch.ones(shape)
    if kind == "plus_1e4":
        return torch.full(shape, 1e4)
    if kind == "minus_1e4":
        return torch.full(shape, -1e4)
    if kind == "mixed_1e4":
        return torch.where(torch.rand(shape, generator=generator) > 0.5, 1e4, -1e4)
    if kind == "signs":  # exactly -1, 0, +1 mixed
        return torch.randint(-1, 2, shape, generator=generator).float()
    raise ValueError(kind)


def make_labels(shape, num_classes: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(B, *spatial) int64 label map of one kind; classes 1..num_classes."""
    batch, spatial = shape[0], shape[1:]
    if kind == "empty":
        return np.zeros(shape, dtype=np.int64)
    if kind == "full":
        return np.full(shape, int(rng.integers(1, num_classes + 1)), dtype=np.int64)
    if kind == "single_voxel":
        labels = np.zeros(shape, dtype=np.int64)
        for b in range(batch):
            index = tuple(int(rng.integers(0, n)) for n in spatial)
            labels[(b, *index)] = int(rng.integers(1, num_classes + 1))
        return labels
    if kind == "noise":
        return rng.integers(0, num_classes + 1, size=shape).astype(np.int64)
    if kind == "blocks":
        coarse = rng.integers(0, num_classes + 1, size=(batch, *(max(1, n // 3) for n in spatial)))
        labels = coarse
        for axis, n in enumerate(spatial, start=1):
            labels = np.repeat(labels, -(-n // labels.shape[axis]), axis=axis)
        return labels[(slice(None), *(slice(0, n) for n in spatial))].astype(np.int64)
    raise ValueError(kind)


def spacings(spatial_dims: int) -> st.SearchStrategy[tuple[float, ...]]:
    fixed = [(5.0, 0.7, 0.7), (1.0, 1.0, 1.0)] if spatial_dims == 3 else [(0.7, 0.7), (5.0, 0.7), (1.0, 1.0)]
    drawn = st.lists(st.floats(0.2, 6.0), min_size=spatial_dims, max_size=spatial_dims).map(tuple)
    return st.one_of(st.sampled_from(fixed), drawn)


@st.composite
def cases(draw, max_classes: int = 3, prediction_kinds=PREDICTION_KINDS) -> Case:
    nd = draw(st.sampled_from([2, 3]))
    spatial = tuple(draw(st.lists(st.integers(1, 7 if nd == 3 else 12), min_size=nd, max_size=nd)))
    batch = draw(st.integers(1, 2))
    num_classes = draw(st.integers(1, max_classes))
    kind = draw(st.sampled_from(LABEL_KINDS))
    seed = draw(st.integers(0, 2**31 - 1))
    labels = make_labels((batch, *spatial), num_classes, kind, np.random.default_rng(seed))
    return Case(
        labels=torch.from_numpy(labels),
        num_classes=num_classes,
        spacing=draw(spacings(nd)),
        label_kind=kind,
        prediction_kind=draw(st.sampled_from(prediction_kinds)),
        mask_kind=draw(st.sampled_from(MASK_KINDS)),
        bf16=draw(st.booleans()),
        seed=seed,
    )
