"""Every loss term of a trainer, logged: per-epoch means in the log and in ``loss_terms.json`` / ``.png``
(:class:`LossTermLog`), the terms read back from the device in one copy, and each term's gradient norm and
share of the total gradient (:func:`term_gradient_norms_of`)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from nnunetv2.utilities.collate_outputs import collate_outputs
from torch import distributed as dist
from torch import nn

from nnunet_sdm.plots import loss_terms_plot


def term_gradient_norms_of(
    network: nn.Module,
    terms: dict[str, torch.Tensor],
    weights: dict[str, float],
    grad_scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Gradient norm over all trainable weights of every loss term (``grad_norm/<term>``, ``loss`` the
    total), whether the total's exceeds nnU-Net's clipping at 12 (``grad_norm/clipped``), and each term's
    share of the total's (``grad_share/<term>`` = weight x term norm / total norm, for the terms that
    ``weights`` lists). Terms of a weighted sum need not have shares that add up to 1 (their gradients
    need not point the same way). The network's ``.grad`` fields are left untouched.
    """
    parameters = [p for p in network.parameters() if p.requires_grad]
    scale = float(grad_scaler.get_scale()) if grad_scaler is not None else 1.0
    norms: dict[str, float] = {}
    for name, value in terms.items():
        if not value.requires_grad:
            continue
        grads = torch.autograd.grad(value * scale, parameters, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().square().sum() for g in grads if g is not None]
        norms[name] = float(torch.stack(squares).sum().sqrt()) / scale if squares else 0.0
    diagnostics = {f"grad_norm/{name}": value for name, value in norms.items()}
    total = norms.get("loss", 0.0)
    if total > 0:
        diagnostics["grad_norm/clipped"] = float(total > 12)
        for name, weight in weights.items():
            if name in norms:
                diagnostics[f"grad_share/{name}"] = weight * norms[name] / total
    return diagnostics


def terms_to_host(terms: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The loss terms as numpy scalars, read back from the device in one copy (one host sync, where stock
    nnU-Net reads its loss back)."""
    values = torch.stack([value.detach().float() for value in terms.values()]).cpu().numpy()
    return dict(zip(terms, values))


class LossTermLog:
    """Mixin of the base trainer: the loss terms' epoch means in the log, ``loss_terms.json`` (kept across
    ``--c`` resumes) and ``loss_terms.png``; means over all DDP ranks."""

    @property
    def _loss_terms_file(self) -> str:
        return os.path.join(self.output_folder, "loss_terms.json")

    def _load_loss_terms(self) -> dict[str, dict[str, float]]:
        """{"train/dice": {"0": value, ...}, ...}; kept across --c resumes in the output folder."""
        try:
            with open(self._loss_terms_file) as handle:
                return json.load(handle)
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _log_terms(self, outputs: list[dict], phase: str, extra: dict[str, float] | None = None) -> None:
        collated = collate_outputs(outputs)
        names = [k for k in collated if k != "loss" and not k.endswith("_hard")]
        means = dict(extra or {})
        for name in names:
            value = float(np.mean(collated[name]))
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, value)
                value = float(np.mean(gathered))
            means[name] = value
        self.epoch_term_means[phase] = means
        if not means:
            return
        self.print_to_log_file(
            f"{phase} loss terms: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(means.items()))
        )
        if self.local_rank == 0:
            history = self._load_loss_terms()
            for name, value in means.items():
                history.setdefault(f"{phase}/{name}", {})[str(self.current_epoch)] = value
            with open(self._loss_terms_file, "w") as handle:
                json.dump(history, handle, indent=1)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.local_rank == 0:
            loss_terms_plot(self._load_loss_terms(), os.path.join(self.output_folder, "loss_terms.png"))
