"""Fixtures of the in-process trainer tests."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture
def make_trainer(planned_synthetic, monkeypatch):
    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    plans = json.loads((planned_synthetic["preprocessed"] / "nnUNetPlans_cpu_small.json").read_text())
    dataset_json = json.loads((planned_synthetic["preprocessed"] / "dataset.json").read_text())

    def make(cls, seed: int = 0):
        torch.manual_seed(seed)
        trainer = cls(
            dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu")
        )
        torch.manual_seed(seed)
        trainer.initialize()
        return trainer

    return make
