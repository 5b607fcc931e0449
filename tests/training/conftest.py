"""Fixtures of the in-process trainer tests."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture
def make_trainer(planned_synthetic, monkeypatch, tmp_path):
    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    # trainers write their logs under nnUNet_results: keep them out of the shared dataset's results, where
    # the end-to-end tests read the log of their own nnUNetv2_train run
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = json.loads((planned_synthetic["preprocessed"] / "nnUNetPlans_cpu_small.json").read_text())
    dataset_json = json.loads((planned_synthetic["preprocessed"] / "dataset.json").read_text())

    def make(cls, seed: int = 0, labels: dict | None = None):
        """``cls`` on the planned dataset; ``labels``: another dataset.json ``labels`` (with
        ``regions_class_order`` if it declares regions), e.g. to make it region-based or sparse."""
        torch.manual_seed(seed)
        described = dict(dataset_json)
        if labels is not None:
            described["labels"] = labels
            if any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values()):
                regions = [k for k in labels if k not in ("background", "ignore")]
                described["regions_class_order"] = list(range(1, len(regions) + 1))
        trainer = cls(dict(plans, continue_training=False), "3d_fullres", 0, described, torch.device("cpu"))
        torch.manual_seed(seed)
        trainer.initialize()
        return trainer

    return make
