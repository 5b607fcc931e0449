"""``nnunet-sdm demo``: the whole workflow on synthetic data, stock nnU-Net vs the flagship SDM trainer.

Steps (each a real nnU-Net command or API call): write a synthetic dataset, plan and preprocess it
(``nnUNetv2_plan_and_preprocess``), derive small CPU plans (``cpu_small`` override), train
``nnUNetTrainer`` and ``nnUNetTrainerSDM`` on the same budget, predict the held-out cases with
``nnUNetv2_predict`` and report Dice, HD95 and ASSD per class for both, and for the flagship followed by
SDM-guided post-processing (``nnunet-sdm sdm-guided``: predicted components that its SDM head places
outside are removed).

Seeded: the trainings run ``nnunet-sdm train --seed DEMO_SEED``, which seeds Python, numpy and torch, the
batch streams (both trainers see the same batches, :mod:`nnunet_sdm.training.seeded_batches`) and Python's
string hash (two fresh-clone runs without it trained the flagship to weights that differed in the last
float bits), so that two runs on one machine print the same table. The augmentation runs in the training
process (``nnUNet_n_proc_DA=0``): on 2 cores, workers would only compete with the training for them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from nnunet_sdm.dataset_json import foreground_labels
from nnunet_sdm.evaluation import SUMMARY_NAME
from nnunet_sdm.runner import Budget
from nnunet_sdm.workflow import nnunet_environment, plan_and_preprocess, predict_command, run_logged

DEMO_DATASET_ID = 990
DEMO_PLANS = "nnUNetPlans_cpu_small"
DEMO_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerSDM")
DEMO_SEED = 0
FLAGSHIP = "nnUNetTrainerSDM"
#: the demo's SDM-guided depth: keep every component the SDM head places inside at all (the mildest rule;
#: the accuracy benchmark chooses the depth on validation folds)
DEMO_SDM_GUIDED_DEPTH_MM = 0.0
SDM_GUIDED = f"{FLAGSHIP} + sdm-guided"
# CPU-sized: 600 iterations, three times the ~200 after which stock nnU-Net learned the thin vessel in one
# probe; at 400 a fresh-clone run had stock miss it (before the batches were seeded, the moment
# varied). The whole demo takes about 5.5 minutes on 2 idle cores.
CPU_BUDGET = Budget(epochs=15, iterations_per_epoch=40, val_iterations_per_epoch=4)
GPU_BUDGET = Budget(epochs=50, iterations_per_epoch=100, val_iterations_per_epoch=10)


def _step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def _note(message: str) -> None:
    print(f"    {message}", flush=True)


def format_table(results: dict[str, dict], label_names: dict[int, str]) -> str:
    metrics = ("Dice", "HD95", "ASSD")
    header = "| trainer | class | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (2 + len(metrics))]
    for trainer, summary in results.items():
        for label, values in summary["mean"].items():
            name = label_names.get(int(label), str(label))
            cells = " | ".join(f"{values[m]:.3f}" for m in metrics)
            lines.append(f"| {trainer} | {name} | {cells} |")
    unlearned = [
        label_names.get(int(label), str(label))
        for label in next(iter(results.values()))["mean"]
        if all(summary["mean"][label]["Dice"] == 0 for summary in results.values())
    ]
    if unlearned:
        lines.append(
            f"\nnot learned by any trainer within this budget: {', '.join(unlearned)} (Dice 0). Small "
            "structures stay at Dice 0 for nnU-Net's first few hundred iterations; give the demo a longer "
            "budget (--epochs, --iterations) to see them."
        )
    return "\n".join(lines)


def evaluate(gt_dir: Path, prediction: Path, names: dict[int, str]) -> dict:
    """The folder's summary (written beside the predictions as ``summary_surface.json`` and ``.csv``)."""
    from nnunet_sdm.evaluation import evaluate_folders, write_summary

    summary = evaluate_folders(gt_dir, prediction, labels=list(names), num_workers=2, progress=False)
    summary_file = prediction / SUMMARY_NAME
    write_summary(summary, summary_file, summary_file.with_suffix(".csv"))
    return summary


def run_demo(
    workdir: Path, epochs: int | None = None, iterations: int | None = None, device: str | None = None
) -> dict[str, dict]:
    from nnunet_sdm.inference.sdm_guided import apply_to_folder
    from nnunet_sdm.synth import make_synthetic_dataset

    started = time.time()
    workdir = workdir.resolve()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = GPU_BUDGET if device == "cuda" else CPU_BUDGET
    budget = Budget(
        epochs or base.epochs, iterations or base.iterations_per_epoch, base.val_iterations_per_epoch
    )
    env = nnunet_environment(workdir)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"nnunet-sdm demo in {workdir} on {device}; budget {budget}")

    _step("1/5 synthetic dataset")
    info = make_synthetic_dataset(Path(env["nnUNet_raw"]), dataset_id=DEMO_DATASET_ID)
    raw = Path(info["folder"])
    names = foreground_labels(raw / "dataset.json")
    print(f"    {raw}")

    _step("2/5 nnUNetv2_plan_and_preprocess, then the cpu_small plans override")
    preprocessed = plan_and_preprocess(
        DEMO_DATASET_ID, env, logs, override="cpu_small", plans_name=DEMO_PLANS, announce=_note
    )

    results: dict[str, dict] = {}
    for i, trainer in enumerate(DEMO_TRAINERS):
        _step(f"3/5 train {trainer} ({i + 1}/{len(DEMO_TRAINERS)}); log: {logs / f'train_{trainer}.log'}")
        command = [sys.executable, "-m", "nnunet_sdm.cli", "train", str(DEMO_DATASET_ID), "3d_fullres", "0"]
        command += ["-tr", trainer, "-p", DEMO_PLANS, "--epochs", str(budget.epochs)]
        command += ["--iterations", str(budget.iterations_per_epoch)]
        command += ["--val-iterations", str(budget.val_iterations_per_epoch), "-device", device]
        command += ["--seed", str(DEMO_SEED)]
        in_process = {**env, "nnUNet_n_proc_DA": "0"}
        run_logged(command, in_process, logs / f"train_{trainer}.log", announce=_note)
        prediction = workdir / "predictions" / trainer
        # the flagship with our predictor: the same label maps, plus the SDMs for the guided rule
        predict = predict_command(
            raw / "imagesTs",
            prediction,
            DEMO_DATASET_ID,
            trainer,
            DEMO_PLANS,
            device=device,
            save_sdm=trainer == FLAGSHIP,
        )
        _step(f"4/5 predict with {trainer} -> {prediction}")
        run_logged(predict, env, logs / f"predict_{trainer}.log", announce=_note)
        results[trainer] = evaluate(raw / "labelsTs", prediction, names)
        if trainer == FLAGSHIP:
            guided = workdir / "predictions" / "nnUNetTrainerSDM_sdm_guided"
            _step(f"4/5 SDM-guided post-processing (depth {DEMO_SDM_GUIDED_DEPTH_MM} mm) -> {guided}")
            apply_to_folder(prediction, guided, DEMO_SDM_GUIDED_DEPTH_MM)
            results[SDM_GUIDED] = evaluate(raw / "labelsTs", guided, names)

    _step("5/5 results on the held-out synthetic cases (mean over cases; HD95 and ASSD in mm)")
    print(format_table(results, names))
    print("\nwhere everything is:")
    print(f"  raw data:       {raw}")
    print(f"  preprocessed:   {preprocessed} (plans {DEMO_PLANS})")
    for trainer in DEMO_TRAINERS:
        model = Path(env["nnUNet_results"]) / raw.name / f"{trainer}__{DEMO_PLANS}__3d_fullres"
        print(f"  {trainer}: model {model}")
        print(
            f"  {' ' * len(trainer)}  predictions {workdir / 'predictions' / trainer} (+ {SUMMARY_NAME} and .csv)"
        )
    print(
        f"  {SDM_GUIDED}: predictions {workdir / 'predictions' / 'nnUNetTrainerSDM_sdm_guided'} (+ sdm_guided.json)"
    )
    print(f"  logs:           {logs}")
    print(f"done in {time.time() - started:.0f} s")
    return results
