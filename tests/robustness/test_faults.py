"""Faults during training: NaN input, a run killed mid-training, bad checkpoints given to ``--c``.

- In-process (cheap): a NaN in a batch makes every trainer skip the optimiser step, as stock's
  GradScaler does, with a line in the log; ``max_non_finite_steps`` such steps in a row stop it with
  ``NonFiniteLossError`` naming the trainer, the epoch and the cases; the weights are unchanged.
- Through nnU-Net's real commands (slow): ``nnUNetv2_train ... -tr nnUNetTrainerSDM_Xue2020`` is SIGKILLed in the
  middle of training and resumed with ``--c``; it trains to the end and ``nnUNetv2_predict`` works. nnU-Net
  writes ``checkpoint_latest.pth`` only every ``save_every`` (50) epochs, so an early kill leaves
  ``checkpoint_best.pth`` (written whenever the EMA pseudo Dice improves, always after epoch 0), which
  nnU-Net's ``--c`` falls back to (``maybe_load_checkpoint``: final, else latest, else best). The kill
  happens when the log shows a later epoch has started, i.e. after that checkpoint was written.
- A truncated, a foreign and another trainer's checkpoint given to ``nnUNetv2_train --c`` stop with our
  ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_sdm.network import unwrap
from nnunet_sdm.training.base import NonFiniteLossError
from nnunet_sdm.training.loader_targets import SDMTargetTransform
from tests.conftest import nnunet_bin, predict_and_check, run, synthetic_batch
from tests.robustness.test_trainer_start_up import TRAINERS

PLANS = "nnUNetPlans_cpu_small"
TRAINER = "nnUNetTrainerSDM"
MODEL = f"{TRAINER}__{PLANS}__3d_fullres"


# ---- NaN in a batch: every trainer skips the step, and a run of them stops it --------------------------------
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_nan_batches_skip_the_step_and_a_run_of_them_stops_every_trainer(
    planned_synthetic, monkeypatch, tmp_path, name
):
    for key, value in planned_synthetic["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans = json.loads((planned_synthetic["preprocessed"] / f"{PLANS}.json").read_text())
    dataset_json = json.loads((planned_synthetic["preprocessed"] / "dataset.json").read_text())
    plans["continue_training"] = False
    trainer = TRAINERS[name](plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    if getattr(trainer, "use_lrnet", False):  # skip the pre-training: the fault is in the M-Net's input
        trainer.lrnet_source = "test (random LR-Net)"

    def batch(poison: bool = False) -> dict:
        made = synthetic_batch(trainer, poison=poison)
        if trainer.distance_targets_in_loader:  # labels + SDMs, as the data-loader workers deliver them
            spacing = trainer.configuration_manager.spacing
            transform = SDMTargetTransform(trainer.foreground_labels, spacing)
            full_shape = made["target"][0].shape[2:]
            made["target"] = [
                torch.stack([transform._one_scale(t[b].short(), full_shape) for b in range(t.shape[0])])
                for t in made["target"]
            ]
        return made

    finite = trainer.train_step(batch())  # control: a clean batch trains
    assert all(np.isfinite(v).all() for v in finite.values())
    before = {k: v.clone() for k, v in unwrap(trainer.network).state_dict().items()}

    def weights_unchanged() -> bool:
        after = unwrap(trainer.network).state_dict()
        return all(torch.equal(before[k], after[k]) for k in before)

    # as stock's GradScaler: the step is skipped, counted, and training goes on
    for in_a_row in range(1, trainer.max_non_finite_steps):
        trainer.train_step(batch(poison=True))
        assert trainer.non_finite_in_a_row == in_a_row and weights_unchanged()
    assert trainer.non_finite_steps_this_epoch == trainer.max_non_finite_steps - 1
    with pytest.raises(
        NonFiniteLossError,
        match=rf"^{name}: non-finite loss at epoch 0 .*case_0.*{trainer.max_non_finite_steps} steps in a row.*resume with --c",
    ):
        trainer.train_step(batch(poison=True))
    assert weights_unchanged(), "weights changed after a non-finite loss"
    log = Path(trainer.log_file).read_text()
    assert log.count("optimiser step skipped, weights unchanged") == trainer.max_non_finite_steps - 1


# ---- through nnU-Net's real commands --------------------------------------------------------------------------
def train_command(fold: str, *extra: str) -> list[str]:
    return [
        nnunet_bin("nnUNetv2_train"),
        "990",
        "3d_fullres",
        fold,
        "-tr",
        TRAINER,
        "-p",
        PLANS,
        "-device",
        "cpu",
        *extra,
    ]


@pytest.fixture
def results_env(planned_synthetic, tmp_path) -> dict:
    """nnU-Net's environment with its own results folder (no clash with other tests' trainings)."""
    return {**planned_synthetic["env"], "nnUNet_results": str(tmp_path / "results")}


def fold_folder(env: dict, planned_synthetic: dict, fold: str) -> Path:
    return Path(env["nnUNet_results"]) / planned_synthetic["results"].name / MODEL / f"fold_{fold}"


def epochs_started(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r": Epoch (\d+)\s*$", log.read_text(), re.M)]


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the training and its data-augmentation workers (the process group started for it)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_with_c_trains_to_the_end_and_predicts(
    planned_synthetic, results_env, tmp_path
):
    num_epochs = 6
    env = {
        **results_env,
        "nnUNetSDM_num_epochs": str(num_epochs),
        "nnUNetSDM_iterations_per_epoch": "3",
        "nnUNetSDM_val_iterations_per_epoch": "1",
    }
    fold = fold_folder(env, planned_synthetic, "0")
    with open(tmp_path / "first_run.txt", "w") as output:
        process = subprocess.Popen(
            train_command("0"), env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and process.poll() is None:
                logs = sorted(fold.glob("training_log_*.txt"))
                # epoch 2 started: epoch 0 and 1 ended, so checkpoint_best.pth was written and closed
                if logs and max(epochs_started(logs[0]), default=-1) >= 2:
                    break
                time.sleep(0.2)
            assert process.poll() is None, (
                "training ended before it could be killed:\n"
                + (tmp_path / "first_run.txt").read_text()[-3000:]
            )
        finally:
            kill_group(process)
    assert process.returncode == -signal.SIGKILL
    assert not (fold / "checkpoint_final.pth").exists()
    best = fold / "checkpoint_best.pth"
    assert best.is_file()
    resumed_from = torch.load(best, map_location="cpu", weights_only=False)["current_epoch"]
    assert 0 < resumed_from < num_epochs
    first_log = sorted(fold.glob("training_log_*.txt"))
    time.sleep(1.1)  # nnU-Net names its log by the second: the resumed run gets a new file

    run(train_command("0", "--c"), env)

    assert (fold / "checkpoint_final.pth").is_file()
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == num_epochs and final["trainer_name"] == TRAINER
    new_logs = [log for log in sorted(fold.glob("training_log_*.txt")) if log not in first_log]
    assert len(new_logs) == 1
    epochs = epochs_started(new_logs[0])
    assert epochs == list(range(resumed_from, num_epochs)), f"resumed run trained epochs {epochs}"
    assert (fold / "validation" / "summary.json").is_file()
    history = json.loads((fold / "loss_terms.json").read_text())
    assert sorted(int(e) for e in history["train/dice_ce"]) == list(range(num_epochs))
    # the gradient shares of every epoch, the resumed ones included
    assert sorted(int(e) for e in history["train/grad_share/l2"]) == list(range(num_epochs))

    predict_and_check(env, planned_synthetic["raw"], tmp_path / "prediction", TRAINER, PLANS)


def _truncated(path: Path) -> None:
    torch.save({"network_weights": {"w": torch.zeros(4096)}, "current_epoch": 3}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, path)


def _other_trainer(path: Path) -> None:
    keys = {"network_weights": {}, "optimizer_state": {}, "current_epoch": 3, "trainer_name": "nnUNetTrainer"}
    torch.save(keys, path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("checkpoint", "make", "message"),
    [
        (
            "checkpoint_latest.pth",
            _truncated,
            r"checkpoint_latest\.pth: cannot be read as a checkpoint .*truncated",
        ),
        ("checkpoint_best.pth", _foreign, r"checkpoint_best\.pth: not an nnU-Net training checkpoint"),
        (
            "checkpoint_final.pth",
            _other_trainer,
            rf"checkpoint_final\.pth: written by trainer nnUNetTrainer, not {TRAINER}; use -pretrained_weights",
        ),
    ],
    ids=["truncated", "foreign", "other_trainer"],
)
def test_bad_checkpoint_given_to_nnunetv2_train_c_stops_with_checkpoint_error(
    planned_synthetic, results_env, checkpoint, make, message
):
    fold = fold_folder(results_env, planned_synthetic, "1")
    fold.mkdir(parents=True)
    make(fold / checkpoint)
    result = subprocess.run(
        train_command("1", "--c"), env=results_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert re.search(rf"CheckpointError: {re.escape(str(fold))}/{message}", result.stderr), result.stderr[
        -3000:
    ]
    assert not (fold / "checkpoint_final.pth").exists() or checkpoint == "checkpoint_final.pth"
