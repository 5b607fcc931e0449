"""nnU-Net's checkpoints with this project's extra trainer state, and clear errors for checkpoints that
cannot be resumed from."""

from __future__ import annotations

import os

import torch

from nnunet_sdm.network import unwrap

CHECKPOINT_EXTRAS_KEY = "nnunet_sdm"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (truncated, foreign, or of another trainer)."""


class ExtraStateCheckpoints:
    """Mixin of the base trainer: nnU-Net's checkpoint plus :meth:`checkpoint_extras` under
    ``CHECKPOINT_EXTRAS_KEY``; loading checks the file and the trainer that wrote it first."""

    def checkpoint_extras(self) -> dict:
        """Trainer state beyond nnU-Net's (e.g. a frozen auxiliary network), stored in every checkpoint."""
        return {}

    def load_checkpoint_extras(self, extras: dict, source: str) -> None:
        """Restore what :meth:`checkpoint_extras` stored (resuming with ``--c``); ``source`` names the file."""

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net's checkpoint, with this project's extras under one more key
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": unwrap(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            CHECKPOINT_EXTRAS_KEY: self.checkpoint_extras(),
        }
        torch.save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError(f"{type(self).__name__}.load_checkpoint takes a file name")
        filename = filename_or_checkpoint
        try:
            checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated file, not a torch file, ...
            raise CheckpointError(
                f"{filename}: cannot be read as a checkpoint ({type(e).__name__}: {e}); it may be truncated "
                f"(a run killed while saving). Delete it to resume from another checkpoint or start anew."
            ) from None
        expected = {"network_weights", "optimizer_state", "current_epoch", "trainer_name"}
        if not isinstance(checkpoint, dict) or not expected <= set(checkpoint):
            raise CheckpointError(
                f"{filename}: not an nnU-Net training checkpoint (needs keys {sorted(expected)})"
            )
        if checkpoint["trainer_name"] != type(self).__name__:
            raise CheckpointError(
                f"{filename}: written by trainer {checkpoint['trainer_name']}, not {type(self).__name__}; "
                f"use -pretrained_weights to start a {type(self).__name__} training from it"
            )
        super().load_checkpoint(filename)
        self.load_checkpoint_extras(checkpoint.get(CHECKPOINT_EXTRAS_KEY, {}), os.path.basename(filename))
