"""Train any nnU-Net trainer (stock or ours) with an explicit budget, as ``nnUNetv2_train`` does.

``nnUNetv2_train`` has no way to set the number of epochs or iterations; comparisons on a CPU (the
demo, the accuracy benchmark) need every trainer, nnU-Net's own included, on the same short budget.
This runs nnU-Net's own trainer lifecycle (the same calls as ``nnunetv2.run.run_training``) with the
budget set on the trainer, so the results land in nnU-Net's usual output folder and
``nnUNetv2_predict -tr NAME`` finds them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from nnunet_sdm.checks import check_integer


@dataclass(frozen=True)
class Budget:
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int

    def __post_init__(self) -> None:
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            check_integer(f"budget {name}", getattr(self, name))


#: Python's string-hash seed: fixed before Python starts, so a seeded run sets it for its own process
HASH_SEED_VARIABLE = "PYTHONHASHSEED"


def seeded_environment(env: dict[str, str], seed: int) -> dict[str, str]:
    """``env`` for a process that trains with ``seed``: Python's string hash fixed to it too."""
    return {**env, HASH_SEED_VARIABLE: str(int(seed))}


def hash_seed_fixed(seed: int) -> bool:
    """Whether this process was started with Python's string hash seeded by :func:`seeded_environment`."""
    return os.environ.get(HASH_SEED_VARIABLE) == str(int(seed))


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def train_with_budget(
    dataset: str | int,
    configuration: str,
    fold: int | str,
    trainer_name: str,
    budget: Budget,
    plans_identifier: str = "nnUNetPlans",
    device: torch.device | None = None,
    pretrained_weights: str | None = None,
    continue_training: bool = False,
    threads: int | None = None,
    warm_start: str | None = None,
    final_validation: bool = True,
    seed: int | None = None,
) -> Path:
    """Train, run nnU-Net's final validation, and return the fold's output folder.

    ``threads``: torch CPU threads (default: one per core, as ``nnUNetv2_train`` on the CPU).
    ``warm_start``: a checkpoint whose weights *all* start this training, output layers included
    (:func:`~nnunet_sdm.network.load_warm_start`; nnU-Net's ``pretrained_weights`` re-initialises them).
    The optimiser, learning-rate schedule and epoch count start anew.
    ``final_validation``: nnU-Net's prediction of the fold's validation cases after training (what
    ``nnUNetv2_find_best_configuration`` reads); a benchmark on held-out test cases can skip it.
    ``seed``: seeds Python's, numpy's and torch's generators before the network is built, and gives the
    training seeded, paired batch streams (:mod:`nnunet_sdm.training.seeded_batches`): every trainer with
    this seed (stock or ours, same plans, fold and ``nnUNet_n_proc_DA``) sees the same cases, patches and
    augmentation draws, in this process or in augmentation workers. A CPU run then repeats bit for bit when
    the thread count is fixed and the process was started with :func:`seeded_environment` (Python's string
    hash; ``nnunet-sdm train --seed`` and the accuracy benchmark do that; a warning says when it is not).
    On CUDA, cuDNN is set to deterministic algorithms.
    """
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    if seed is not None:
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if not hash_seed_fixed(seed):
            warnings.warn(
                f"seed {seed}: {HASH_SEED_VARIABLE} is {os.environ.get(HASH_SEED_VARIABLE)!r}, not {seed}; the "
                "batches are seeded, but float rounding may differ between runs (start the process with "
                f"{HASH_SEED_VARIABLE}={seed}, as nnunet-sdm train --seed does)",
                stacklevel=2,
            )
    device = device or default_device()
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if device.type == "cpu":
        torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    trainer = get_trainer_from_args(
        str(dataset),
        configuration,
        int(fold) if str(fold) != "all" else fold,
        trainer_name,
        plans_identifier,
        continue_training,
        device=device,
    )
    if seed is not None:
        from nnunet_sdm.training.seeded_batches import seed_batches

        seed_batches(trainer, seed)
        if device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
    trainer.num_epochs = budget.epochs
    trainer.num_iterations_per_epoch = budget.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = budget.val_iterations_per_epoch
    if warm_start is not None and (pretrained_weights is not None or continue_training):
        raise ValueError("warm_start goes without pretrained_weights and continue_training")
    maybe_load_checkpoint(trainer, continue_training, False, pretrained_weights)
    if warm_start is not None:
        from nnunet_sdm.network import load_warm_start

        if not trainer.was_initialized:
            trainer.initialize()
        weights = torch.load(warm_start, map_location="cpu", weights_only=False)["network_weights"]
        fresh = load_warm_start(trainer.network, weights, source=warm_start)
        trainer.print_to_log_file(f"warm start from {warm_start} ({fresh} output rows initialised anew)")
    trainer.run_training()
    if final_validation:
        trainer.perform_actual_validation(False)
    return Path(trainer.output_folder)
