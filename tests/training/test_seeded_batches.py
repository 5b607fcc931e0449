"""Seeded, paired batch streams: one seed gives every trainer the same batches, run after run.

- the stream of a seed is the same for stock ``nnUNetTrainer`` and the flagship (same cases, patches and
  augmentation draws: equal images and targets at every scale), in the training process and with
  augmentation workers, whatever else the process draws between batches;
- another seed gives other batches;
- ``nnunet-sdm train --seed`` twice (augmentation workers, the hash seed set by the command itself) ends
  with identical weights.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_sdm.training.sdm import nnUNetTrainerSDM
from nnunet_sdm.training.seeded_batches import IsolatedRandomStream, seed_batches, seeded_class

BATCHES = 4


def batch_stream(make_trainer, cls, seed: int | None, n: int = BATCHES, disturb: bool = False) -> list:
    trainer = make_trainer(cls)
    if seed is not None:
        seed_batches(trainer, seed)
    train, validation = trainer.get_dataloaders()
    try:
        batches = []
        for _ in range(n):
            if disturb:  # the trainer's own draws between batches must not move the stream
                torch.rand(1000)
                np.random.rand(1000)
                random.random()
            batches.append(next(train))
        batches.append(next(validation))
        return batches
    finally:
        for augmenter in (train, validation):
            if hasattr(augmenter, "_finish"):
                augmenter._finish()


def same_batches(first: list, second: list) -> bool:
    for a, b in zip(first, second, strict=True):
        if list(a["keys"]) != list(b["keys"]) or not torch.equal(a["data"], b["data"]):
            return False
        targets_a = a["target"] if isinstance(a["target"], list) else [a["target"]]
        targets_b = b["target"] if isinstance(b["target"], list) else [b["target"]]
        if not all(torch.equal(x, y) for x, y in zip(targets_a, targets_b, strict=True)):
            return False
    return True


@pytest.mark.parametrize("workers", ["0", "2"])
def test_stock_and_flagship_see_the_same_batches(make_trainer, monkeypatch, workers):
    monkeypatch.setenv("nnUNet_n_proc_DA", workers)
    stock = batch_stream(make_trainer, nnUNetTrainer, seed=7)
    flagship = batch_stream(make_trainer, nnUNetTrainerSDM, seed=7, disturb=True)
    assert same_batches(stock, flagship)
    # augmentation drew something: the training patches are not the validation's plain crops
    assert any(not torch.equal(b["data"], stock[0]["data"]) for b in stock[1:BATCHES])


def test_another_seed_or_none_gives_other_batches(make_trainer, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    assert not same_batches(
        batch_stream(make_trainer, nnUNetTrainer, seed=1), batch_stream(make_trainer, nnUNetTrainer, seed=2)
    )
    # nnU-Net's own streams (no batch seed) differ from run to run: what this module fixes
    assert not same_batches(
        batch_stream(make_trainer, nnUNetTrainer, seed=None),
        batch_stream(make_trainer, nnUNetTrainer, seed=None),
    )


def test_seeded_trainer_keeps_its_name_and_checkpoint_identity(make_trainer):
    trainer = seed_batches(make_trainer(nnUNetTrainerSDM), 0)
    assert type(trainer).__name__ == "nnUNetTrainerSDM"
    assert isinstance(trainer, nnUNetTrainerSDM)
    assert seeded_class(type(trainer)) is type(trainer)  # not mixed in twice
    with pytest.raises(ValueError, match="batch seed"):
        seed_batches(make_trainer(nnUNetTrainer), -1)


def test_isolated_stream_ignores_the_callers_draws():
    class Draws:
        def set_thread_id(self, _):
            pass

        def __next__(self):
            return (np.random.rand(), torch.rand(1).item(), random.random())

    def draws(disturb: bool) -> list:
        stream = IsolatedRandomStream(Draws(), [5, 0, 0, 0])
        out = []
        for _ in range(3):
            if disturb:
                np.random.rand(7)
                torch.rand(7)
                random.random()
            out.append(next(stream))
        return out

    assert draws(False) == draws(True)
    np.random.seed(0)
    torch.manual_seed(0)
    draws(False)
    # the caller's states are given back: its next draws are those of the seeds it set
    assert np.random.rand() == np.random.RandomState(0).rand()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(0)))


@pytest.mark.slow
def test_same_seed_twice_gives_identical_weights(planned_synthetic, tmp_path):
    """A/A through ``nnunet-sdm train --seed`` with one augmentation worker: bit-identical final weights."""
    weights = []
    for run in ("a", "b"):
        env = dict(planned_synthetic["env"], nnUNet_results=str(tmp_path / run), nnUNet_n_proc_DA="1")
        env.pop("PYTHONHASHSEED", None)  # the command fixes it itself
        command = [sys.executable, "-m", "nnunet_sdm.cli", "train", "990", "3d_fullres", "0"]
        command += ["-tr", "nnUNetTrainerSDM", "-p", "nnUNetPlans_cpu_small", "--epochs", "2"]
        command += ["--iterations", "3", "--val-iterations", "1", "-device", "cpu", "--seed", "3"]
        subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        (checkpoint,) = Path(tmp_path / run).rglob("checkpoint_final.pth")
        weights.append(torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
