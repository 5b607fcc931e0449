"""Why a distance trainer lags stock nnU-Net: numbers on real data, printed as JSON (docs/diagnosis.md).

1. **Targets** (from the label maps alone, every case of a dataset padded/cropped to the plans' patch):
   the size of the normalised SDM target at the voxels next to a boundary (first voxel inside and
   outside) under Xue et al.'s per-patch normalisation and under truncation at tau mm; the fraction of
   voxels where Xue's Heaviside sigmoid(-k t), k = 1500, has a usable gradient (0.01 < H < 0.99) when the
   prediction equals the target, and the same for the flagship's k = 3 tau / spacing; mean (1 + Phi) of
   Calivá et al.'s penalty and the fraction of voxels with Phi > 0.5.
2. **Gradients** (each trainer in-process on real preprocessed patches, no augmentation): the norm of
   the gradient of every loss term over all weights, and its share of the norm of the total loss's
   gradient (weight x term norm / total norm; nnU-Net clips the total at 12), at initialisation and,
   with ``--checkpoint``, from a trained stock checkpoint (the warm start); distance terms at full weight.

Usage (an output folder of benchmarks/accuracy.py holds the preprocessed data and the pre-training)::

    python benchmarks/diagnose.py --work /tmp/acc_warm --dataset 4 --plans nnUNetPlans_cpu_small \\
        --checkpoint /tmp/acc_warm/pretrain/nnUNet_results/.../checkpoint_final.pth
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_TRAINERS = [
    "nnUNetTrainer",
    "nnUNetTrainerSDM",
    "nnUNetTrainerSDM_Xue2020",
    "nnUNetTrainerSDMDualHead",
    "nnUNetTrainerDistPenaltyDiceCE",
]


def fit_to_patch(array: np.ndarray, patch: list[int]) -> np.ndarray:
    """Centre-crop or zero-pad the last len(patch) axes to ``patch``."""
    out = array
    for axis, size in enumerate(patch, start=array.ndim - len(patch)):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
        elif n < size:
            pad = [(0, 0)] * out.ndim
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            out = np.pad(out, pad)
    return out


def load_patches(
    folder: Path, patch: list[int], limit: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset = infer_dataset_class(str(folder))(str(folder))
    keys = sorted(dataset.identifiers)[:limit]
    images, labels = [], []
    for key in keys:
        data, seg, *_ = dataset.load_case(key)
        images.append(fit_to_patch(np.asarray(data[:1], dtype=np.float32), patch))
        # nnU-Net marks voxels outside the nonzero crop -1; its loader trains on them as background
        labels.append(np.maximum(fit_to_patch(np.asarray(seg[:1]), patch), 0).astype(np.int64))
    return np.stack(images), np.stack(labels), keys


def target_statistics(labels: np.ndarray, spacing: tuple[float, ...], classes: list[int], tau: float) -> dict:
    import torch

    from nnunet_sdm.distance import caliva_penalty, normalise_xue, signed_distance, truncate

    lab = torch.as_tensor(labels[:, 0])
    sdm = signed_distance(lab, spacing, classes)  # (B, K, *spatial) mm
    per_patch = normalise_xue(sdm, spatial_dims=3)
    truncated = truncate(sdm, tau)
    step = min(spacing)
    inside_first = (sdm < 0) & (sdm > -1.5 * step)  # the first voxel inside the boundary
    outside_first = (sdm > 0) & (sdm < 1.5 * step)
    k_flagship = math.log(19.0) * tau / step

    def usable(t: torch.Tensor, k: float) -> float:
        h = torch.sigmoid(-k * t)
        return float(((h > 0.01) & (h < 0.99)).float().mean())

    stats: dict = {"tau_mm": tau, "k_flagship": k_flagship, "per_class": {}}
    for i, c in enumerate(classes):
        present = (lab == c).flatten(1).any(1)
        rows = {}
        for name, t in (("per_patch", per_patch[:, i]), ("truncated", truncated[:, i])):
            t = t[present]
            rows[name] = {
                "median_abs_first_voxel_inside": float(t[inside_first[present, i]].abs().median()),
                "median_abs_first_voxel_outside": float(t[outside_first[present, i]].abs().median()),
                "usable_heaviside_fraction_k1500": usable(t, 1500.0),
                "usable_heaviside_fraction_k_flagship": usable(t, k_flagship),
            }
        stats["per_class"][str(c)] = rows
    phi = caliva_penalty(lab, spacing, classes)
    stats["caliva"] = {
        "mean_1_plus_phi": float(1 + phi.mean()),
        "fraction_phi_above_half": float((phi > 0.5).float().mean()),
    }
    return stats


def gradient_statistics(args, images: np.ndarray, labels: np.ndarray) -> dict:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_sdm.network import load_warm_start, unwrap
    from nnunet_sdm.training.base import nnUNetTrainerDistanceBase, term_gradient_norms_of

    results: dict = {}
    starts = [("init", None)] + ([("warm_start", args.checkpoint)] if args.checkpoint else [])
    for name in args.trainers:
        torch.manual_seed(0)
        trainer = get_trainer_from_args(
            str(args.dataset), "3d_fullres", 0, name, args.plans, device=torch.device("cpu")
        )
        trainer.initialize()
        initial = {k: v.clone() for k, v in unwrap(trainer.network).state_dict().items()}
        for start, checkpoint in starts:
            unwrap(trainer.network).load_state_dict(initial)
            if checkpoint:
                weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
                load_warm_start(trainer.network, weights, source=checkpoint)
            trainer.current_epoch = trainer.num_epochs  # any ramp at full weight
            per_batch = []
            for first in range(0, len(images), trainer.batch_size):
                data = torch.as_tensor(images[first : first + trainer.batch_size])
                target = torch.as_tensor(labels[first : first + trainer.batch_size]).float()
                if len(data) < trainer.batch_size:
                    break
                targets = [target]
                for scale in trainer._get_deep_supervision_scales()[1:]:
                    shape = [round(p * s) for p, s in zip(target.shape[2:], scale)]
                    targets.append(torch.nn.functional.interpolate(target, shape, mode="nearest-exact"))
                if isinstance(trainer, nnUNetTrainerDistanceBase):
                    _, _, terms = trainer.forward_and_loss(data, targets)
                    per_batch.append(trainer.term_gradient_norms(terms))
                else:
                    terms = {"loss": trainer.loss(trainer.network(data), targets)}
                    per_batch.append(term_gradient_norms_of(trainer.network, terms, {}, None))
            keys = sorted({k for b in per_batch for k in b})
            results.setdefault(name, {})[start] = {
                k: float(np.mean([b[k] for b in per_batch if k in b])) for k in keys
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/diagnose.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="folder with nnUNet_raw and nnUNet_preprocessed"
    )
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--plans", default="nnUNetPlans")
    parser.add_argument("--checkpoint", help="a stock checkpoint for the warm-start gradients")
    parser.add_argument("--trainers", nargs="+", default=DEFAULT_TRAINERS)
    parser.add_argument("--cases", type=int, default=32, help="cases for the statistics (sorted, first N)")
    parser.add_argument("--tau", type=float, default=5.0, help="truncation in mm for the truncated targets")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)

    for sub in ("nnUNet_raw", "nnUNet_preprocessed"):
        os.environ[sub] = str(args.work / sub)
    # the trainers built here write a training log on construction: keep it out of the work's results,
    # where real trainings (and tests reading their logs) live
    scratch_results = tempfile.TemporaryDirectory(prefix="diagnose_results_")
    os.environ["nnUNet_results"] = scratch_results.name
    os.environ.setdefault("nnUNet_compile", "f")
    from nnunet_sdm.dataset_json import foreground_labels
    from nnunet_sdm.workflow import register_trainers

    register_trainers()
    import torch
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    torch.set_num_threads(1)
    name = maybe_convert_to_dataset_name(args.dataset)
    preprocessed = args.work / "nnUNet_preprocessed" / name
    plans = json.loads((preprocessed / f"{args.plans}.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    folder = preprocessed / config["data_identifier"]
    patch = [int(p) for p in config["patch_size"]]
    images, labels, keys = load_patches(folder, patch, args.cases)
    classes = list(foreground_labels(preprocessed / "dataset.json"))
    report = {
        "dataset": name,
        "plans": args.plans,
        "patch": patch,
        "spacing": config["spacing"],
        "cases": len(keys),
        "targets": target_statistics(labels, tuple(config["spacing"]), classes, args.tau),
        "gradients": gradient_statistics(args, images, labels),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
