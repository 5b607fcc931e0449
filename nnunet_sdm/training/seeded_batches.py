"""Seeded, paired batch streams for any nnU-Net trainer (stock or ours).

nnU-Net's augmentation workers (``NonDetMultiThreadedAugmenter`` with ``seeds=None``) draw their own seeds
and hand batches over in whatever order they finish, so two runs of one set-up see different batches: on
LA 2018 that alone moved a stock-against-stock comparison by HD95 x1.21 (docs/accuracy.md). A comparison
of two trainers is only paired when both see the same batches.

With a batch seed (:func:`seed_batches`), every batch comes from a generator state of its own:

- the training and the validation loader each draw from streams seeded by ``(seed, stream, DDP rank, epoch
  the loaders were built at, worker)`` through numpy's ``SeedSequence``;
- around each batch the stream's numpy, torch (CPU) and Python ``random`` states are swapped in and out
  again (:class:`IsolatedRandomStream`), so nothing else the process draws (the network's initialisation,
  extra output rows, the trainer's own randomness) moves the batches;
- with augmentation workers, batchgenerators' ``MultiThreadedAugmenter`` collects their batches in a fixed
  round-robin order (nnU-Net's ``NonDet`` variant takes whichever comes first).

So two trainers with one seed, the same plans, fold and ``nnUNet_n_proc_DA`` see the same cases, patches and
augmentation draws, batch for batch. A resumed training (``--c``) starts its streams at the epoch it resumes
from: it repeats for a given interruption point, not the uninterrupted run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_sdm.checks import check_integer

#: stream numbers in the seed entropy
TRAIN_STREAM, VALIDATION_STREAM = 0, 1


def _random_states(entropy: list[int]) -> tuple:
    """Fresh numpy, torch and Python ``random`` states from one ``SeedSequence``."""
    words = np.random.SeedSequence(entropy).generate_state(4, dtype=np.uint32)
    numpy_state = np.random.RandomState(int(words[0])).get_state()
    torch_state = torch.Generator().manual_seed(int(words[1]) << 32 | int(words[2])).get_state()
    python_state = random.Random(int(words[3])).getstate()
    return numpy_state, torch_state, python_state


def _capture() -> tuple:
    return np.random.get_state(), torch.get_rng_state(), random.getstate()


def _restore(states: tuple) -> None:
    numpy_state, torch_state, python_state = states
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    random.setstate(python_state)


class IsolatedRandomStream:
    """A data loader whose batches draw from their own random states, whatever else the process draws.

    nnU-Net's loader and batchgenerators' transforms use the global numpy, torch and ``random`` generators;
    this swaps the stream's states in around each batch and the caller's back afterwards. The states are
    made on the first batch, from ``entropy`` and the worker number the augmenter gives
    (``set_thread_id``), so every worker has a stream of its own.
    """

    def __init__(self, loader: Any, entropy: list[int]) -> None:
        self.loader = loader
        self.entropy = [int(e) for e in entropy]
        self.worker = 0
        self._states: tuple | None = None

    def set_thread_id(self, thread_id: int) -> None:
        """Called by the augmenter in each worker process, first thing."""
        self.worker = int(thread_id)
        self.loader.set_thread_id(thread_id)
        # one torch thread per worker, as nnU-Net's own (NonDet) workers have: more only oversubscribe the
        # cores that the training and the other workers use (measured: 21 s against 12 s per epoch on 2 cores)
        torch.set_num_threads(1)

    def __iter__(self) -> IsolatedRandomStream:
        return self

    def __next__(self) -> dict:
        if self._states is None:
            self._states = _random_states([*self.entropy, self.worker])
        caller = _capture()
        _restore(self._states)
        try:
            return next(self.loader)
        finally:
            self._states = _capture()
            _restore(caller)

    next = __next__


def seeded_augmenter(
    loader: Any, entropy: list[int], num_processes: int, num_cached: int = 6, pin_memory: bool = False
):
    """``loader``'s batches from :class:`IsolatedRandomStream` states: in this process (``num_processes``
    0) or from ``num_processes`` workers collected round-robin (a fixed order)."""
    stream = IsolatedRandomStream(loader, entropy)
    if num_processes == 0:
        return SingleThreadedAugmenter(stream, None)
    return MultiThreadedAugmenter(
        stream,
        None,
        num_processes,
        num_cached_per_queue=max(2, num_cached // num_processes),
        pin_memory=pin_memory,
        wait_time=0.002,
    )


def reseeded(augmenter: Any, entropy: list[int]):
    """nnU-Net's augmenter (``SingleThreadedAugmenter`` or ``NonDetMultiThreadedAugmenter``, as
    ``nnUNetTrainer.get_dataloaders`` makes them) stopped and remade as :func:`seeded_augmenter` with the same
    loader, transforms and number of workers."""
    if isinstance(augmenter, SingleThreadedAugmenter):
        return seeded_augmenter(augmenter.data_loader, entropy, 0)
    if isinstance(augmenter, NonDetMultiThreadedAugmenter):
        augmenter._finish()
        return seeded_augmenter(
            augmenter.generator, entropy, augmenter.num_processes, augmenter.num_cached, augmenter.pin_memory
        )
    raise TypeError(
        f"seeded batches: cannot reseed a {type(augmenter).__name__}; a trainer whose get_dataloaders returns "
        "other augmenters than nnU-Net's cannot be trained with a batch seed"
    )


class SeededBatches:
    """Mixin of :func:`seed_batches`: ``get_dataloaders`` gives seeded streams when ``batch_seed`` is set."""

    batch_seed: int | None = None

    def get_dataloaders(self):
        train, validation = super().get_dataloaders()
        if self.batch_seed is None:
            return train, validation
        rank = torch.distributed.get_rank() if self.is_ddp else 0
        base = [self.batch_seed, rank, self.current_epoch]
        self.print_to_log_file(
            f"seeded batches: seed {self.batch_seed}, rank {rank}, from epoch {self.current_epoch}"
        )
        return (
            reseeded(train, [*base, TRAIN_STREAM]),
            reseeded(validation, [*base, VALIDATION_STREAM]),
        )


_SEEDED_CLASSES: dict[type, type] = {}


def seeded_class(trainer_class: type) -> type:
    """``trainer_class`` with :class:`SeededBatches` mixed in, under the same name and module, so that the
    output folder, the checkpoints' ``trainer_name`` and ``nnUNetv2_predict -tr NAME`` stay those of the
    trainer itself (the mixin changes nothing that inference sees)."""
    if issubclass(trainer_class, SeededBatches):
        return trainer_class
    if trainer_class not in _SEEDED_CLASSES:
        _SEEDED_CLASSES[trainer_class] = type(
            trainer_class.__name__,
            (SeededBatches, trainer_class),
            {"__module__": trainer_class.__module__, "__qualname__": trainer_class.__qualname__},
        )
    return _SEEDED_CLASSES[trainer_class]


def seed_batches(trainer: nnUNetTrainer, seed: int) -> nnUNetTrainer:
    """Give ``trainer`` (any nnU-Net trainer, before ``run_training``) seeded, paired batch streams."""
    check_integer("batch seed", seed, minimum=0)
    if not isinstance(trainer, nnUNetTrainer):
        raise TypeError(f"seed_batches takes an nnU-Net trainer, got {type(trainer).__name__}")
    trainer.__class__ = seeded_class(type(trainer))
    trainer.batch_seed = int(seed)
    return trainer
