"""DDP: two processes (gloo, CPU) on half a batch each give the loss terms and the updated weights of one
process on the whole batch.

nnU-Net's own DDP path (``nnUNetv2_train -num_gpus 2``) hard-codes NCCL and CUDA devices (a trainer made
inside a process group takes ``cuda:<rank>``), so on a CPU each rank's trainer is made and initialised
first, then set up as nnU-Net's ``initialize`` does under DDP, in its order: the network, then the
``DistributedDataParallel`` wrapper (without CUDA ``device_ids``), then the loss (built with ``ddp=True``:
nnU-Net's Dice gathers its sums over the ranks) and the deep-supervision weights (1e-6 for the last
output under DDP). Everything after that is the trainer's own ``train_step``. Stock ``nnUNetTrainer`` runs
the same test as a control: a difference that stock shows too is nnU-Net's, not ours.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.nn.parallel import DistributedDataParallel

from nnunet_sdm.network import unwrap
from nnunet_sdm.training.sdm import nnUNetTrainerSDM
from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020
from tests.conftest import synthetic_batch

TRAINERS = {cls.__name__: cls for cls in (nnUNetTrainer, nnUNetTrainerSDM, nnUNetTrainerSDM_Xue2020)}
WORLD = 2


def make_trainer(name: str, setup: dict):
    os.environ.update(setup["env"])
    plans = json.loads(open(setup["plans"]).read())
    dataset_json = json.loads(open(setup["dataset_json"]).read())
    torch.manual_seed(0)
    trainer = TRAINERS[name](
        dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu")
    )
    trainer.initialize()
    return trainer


def global_batch(trainer) -> dict:
    """Four samples: two different synthetic batches of two."""
    torch.manual_seed(1)
    first, second = synthetic_batch(trainer), synthetic_batch(trainer)
    second["target"] = [torch.flip(t, dims=[-1]) for t in second["target"]]
    return {
        "data": torch.cat([first["data"], second["data"]]),
        "target": [torch.cat(pair) for pair in zip(first["target"], second["target"])],
        "keys": first["keys"] + second["keys"],
    }


def rank_part(batch: dict, rank: int) -> dict:
    per_rank = batch["data"].shape[0] // WORLD
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    return {
        "data": batch["data"][part],
        "target": [t[part] for t in batch["target"]],
        "keys": batch["keys"][part],
    }


def as_ddp(trainer) -> None:
    """What nnU-Net's initialize does when a process group exists, on the CPU (no CUDA device_ids)."""
    trainer.is_ddp, trainer.local_rank = True, dist.get_rank()
    trainer.network = DistributedDataParallel(trainer.network)
    trainer.__dict__.pop("deep_supervision_weights", None)  # our cached weights depend on is_ddp
    trainer.loss = trainer._build_loss()


def ddp_worker(rank: int, name: str, setup: dict, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = make_trainer(name, setup)  # before the process group: nnU-Net would pick a CUDA device
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        as_ddp(trainer)
        batch = global_batch(trainer)
        terms = trainer.train_step(rank_part(batch, rank))
        gathered = [None] * WORLD
        dist.all_gather_object(gathered, {k: float(v) for k, v in terms.items()})
        if rank == 0:
            weights = {k: v.detach().clone() for k, v in unwrap(trainer.network).state_dict().items()}
            torch.save({"terms": gathered, "weights": weights}, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_two_processes_equal_one_on_the_global_batch(planned_synthetic, tmp_path, name):
    preprocessed = planned_synthetic["preprocessed"]
    setup = {
        "env": {**planned_synthetic["env"], "nnUNet_results": str(tmp_path)},
        "plans": str(preprocessed / "nnUNetPlans_cpu_small.json"),
        "dataset_json": str(preprocessed / "dataset.json"),
    }
    out = tmp_path / "ddp.pt"
    mp.spawn(ddp_worker, args=(name, setup, free_port(), str(out)), nprocs=WORLD, join=True)
    ddp = torch.load(out)

    single = make_trainer(name, setup)
    terms = single.train_step(global_batch(single))
    for term, value in terms.items():
        # nnU-Net logs the mean over the ranks of each rank's value (all_gather in on_train_epoch_end)
        mean_over_ranks = sum(rank_terms[term] for rank_terms in ddp["terms"]) / WORLD
        assert mean_over_ranks == pytest.approx(float(value), rel=1e-4, abs=1e-6), term
    for key, value in unwrap(single.network).state_dict().items():
        torch.testing.assert_close(ddp["weights"][key], value, rtol=1e-4, atol=1e-6, msg=key)
