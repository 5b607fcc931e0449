"""``benchmarks/accuracy.py`` end to end on a tiny synthetic dataset: files written, then resume.

Two trainers (stock and ``nnUNetTrainerSDM_Xue2020``), 1 epoch x 2 iterations, the fixed-split path (2 of 8 cases
held out by a test list), one data-augmentation worker.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmarks._load import ACCURACY
from tests.conftest import nnunet_env, training_log

pytestmark = pytest.mark.slow

TRAINERS = ["nnUNetTrainer", "nnUNetTrainerSDM_Xue2020"]
METRICS = ["Dice", "HD95", "ASSD", "NSD@1.0mm", "NSD@2.0mm"]


def _harness(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ACCURACY), *args], env=env, capture_output=True, text=True)


def _check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    from nnunet_sdm.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("accuracy")
    info = make_synthetic_dataset(
        root / "raw", dataset_id=991, num_training=8, num_test=0, shape=(16, 48, 48), seed=3
    )
    test_cases = info["train_cases"][-2:]
    split_file = root / "test_cases.json"
    split_file.write_text(json.dumps({"test_cases": test_cases}))
    out = root / "out"
    env = nnunet_env(root / "unused")  # one augmentation worker; the harness sets the nnU-Net folders
    args = [
        "--raw",
        info["folder"],
        "--test-cases",
        str(split_file),
        "--trainers",
        *TRAINERS,
        "--plans-override",
        "cpu_small",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "2",
        "--val-iters-per-epoch",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
        "-np",
        "1",
    ]
    first = _check(_harness(args, env))
    return {"out": out, "args": args, "env": env, "stdout": first, "test_cases": test_cases, "info": info}


def _fold(out, trainer):
    return (
        out
        / "nnUNet_results"
        / "Dataset991_SDMSynth"
        / f"{trainer}__nnUNetPlans_cpu_small__3d_fullres"
        / "fold_0"
    )


def test_test_cases_are_kept_out_of_planning_and_training(benchmark):
    out, test_cases = benchmark["out"], benchmark["test_cases"]
    raw = out / "nnUNet_raw" / "Dataset991_SDMSynth"
    trained_on = sorted(p.name.removesuffix(".nii.gz") for p in (raw / "labelsTr").iterdir())
    assert len(trained_on) == 6 and not set(trained_on) & set(test_cases)
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 6
    assert sorted(p.name for p in (out / "test" / "labelsTs").iterdir()) == [
        f"{c}.nii.gz" for c in test_cases
    ]
    splits = json.loads(
        (out / "nnUNet_preprocessed" / "Dataset991_SDMSynth" / "splits_final.json").read_text()
    )
    assert len(splits) == 5 and sorted(splits[0]["train"] + splits[0]["val"]) == trained_on
    for trainer in TRAINERS:
        log = training_log(_fold(out, trainer))
        assert "Using splits from existing split file" in log


def test_results_json_has_per_class_stats_ratios_and_timings(benchmark):
    out = benchmark["out"]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["test_cases"] == benchmark["test_cases"]
    assert results["settings"]["budget"] == {
        "epochs": 1,
        "iterations_per_epoch": 2,
        "val_iterations_per_epoch": 1,
    }
    assert results["settings"]["n_train_cases"] == 6 and results["settings"]["n_test_cases"] == 2
    assert results["labels"] == {"1": "organ", "2": "vessel"}
    assert results["metrics"] == METRICS
    assert sorted(results["cases"]) == sorted(benchmark["test_cases"])
    assert list(results["trainers"]) == TRAINERS
    for trainer, entry in results["trainers"].items():
        assert (out / "predictions" / trainer / "summary_surface.json").is_file()
        assert (_fold(out, trainer) / "checkpoint_final.pth").is_file()
        for label in ("1", "2"):
            for metric in METRICS:
                stats = entry["per_class"][label][metric]
                assert set(stats) == {"mean", "sd", "n"} and stats["n"] == 2
                assert isinstance(stats["mean"], float)
                assert len(entry["per_case"][label][metric]) == 2
        ratios = entry["ratio_to_nnUNetTrainer"]
        assert set(ratios) == {"1", "2", "mean"}
        for key in ratios:
            assert set(ratios[key]) == {"HD95", "ASSD"}
            assert all(isinstance(v, float) and v > 0 for v in ratios[key].values())
        assert entry["timing"]["train_seconds"] > 0 and entry["timing"]["predict_seconds"] > 0
        assert entry["timing"]["epochs_logged"] == 1
        curves = entry["training_curves"]
        per_class = curves.pop("dice_per_class")
        assert set(curves) == {"mean_fg_dice", "ema_fg_dice", "train_losses", "val_losses"}
        assert all(len(values) == 1 and isinstance(values[0], float) for values in curves.values())
        assert 0.0 <= curves["mean_fg_dice"][0] <= 1.0
        assert len(per_class) == 1 and len(per_class[0]) == 2  # one epoch, two foreground classes
        assert curves["mean_fg_dice"][0] == pytest.approx(sum(per_class[0]) / 2)
    stock = results["trainers"]["nnUNetTrainer"]["ratio_to_nnUNetTrainer"]
    assert all(v == pytest.approx(1.0) for r in stock.values() for v in r.values())


def test_results_md_has_a_row_per_class_and_metric_and_the_ratio_table(benchmark):
    out = benchmark["out"]
    text = (out / "results.md").read_text()
    lines = text.splitlines()
    assert "| Class | Metric | nnUNetTrainer | nnUNetTrainerSDM_Xue2020 |" in lines
    assert any(line.startswith("| 1 (organ) | Dice") for line in lines)
    assert any(line.startswith("| 2 (vessel) | Dice") for line in lines)
    metric_rows = [line for line in lines if line.count("±") == 2]
    assert len(metric_rows) == 2 * len(METRICS)
    ratio_header = next(line for line in lines if line.startswith("| Trainer | organ HD95"))
    assert ratio_header.split("|")[2:-1] == [
        f" {c} {m} " for c in ("organ", "vessel", "mean") for m in ("HD95", "ASSD")
    ]
    stock_row = next(line for line in lines if line.startswith("| nnUNetTrainer | 1.00"))
    assert stock_row.count("1.00") == 6
    assert any(line.startswith("| nnUNetTrainerSDM_Xue2020 | ") and "n/a" not in line for line in lines)
    assert (out / "results.png").stat().st_size > 10_000
    assert (out / "training_curves.png").stat().st_size > 10_000
    assert "## Validation pseudo Dice during training" in lines
    curve_rows = [
        line for line in lines if line.startswith(("| nnUNetTrainer | ", "| nnUNetTrainerSDM_Xue2020 | "))
    ]
    assert any(
        line.count("|") == 5 and ("never" in line or line.split("|")[2].strip().isdigit())
        for line in curve_rows
    )
    assert "already finished" not in benchmark["stdout"]
    assert "epoch 0: train_loss" in benchmark["stdout"]


def test_rerun_resumes_without_training_or_predicting(benchmark):
    out = benchmark["out"]
    checkpoints = {t: (_fold(out, t) / "checkpoint_final.pth").stat().st_mtime_ns for t in TRAINERS}
    predictions = {
        t: sorted((p.name, p.stat().st_mtime_ns) for p in (out / "predictions" / t).glob("*.nii.gz"))
        for t in TRAINERS
    }
    stdout = _check(_harness(benchmark["args"], benchmark["env"]))
    for trainer in TRAINERS:
        assert f"{trainer}: already finished" in stdout
    assert "already planned and preprocessed" in stdout
    assert "_train_one" not in stdout and "nnUNetv2_predict" not in stdout
    assert "nnUNetv2_plan_and_preprocess -d" not in stdout
    for trainer in TRAINERS:
        assert (_fold(out, trainer) / "checkpoint_final.pth").stat().st_mtime_ns == checkpoints[trainer]
        now = sorted((p.name, p.stat().st_mtime_ns) for p in (out / "predictions" / trainer).glob("*.nii.gz"))
        assert now == predictions[trainer]
    assert json.loads((out / "results.json").read_text())["trainers"].keys() == set(TRAINERS)


def test_rerun_with_another_budget_stops_instead_of_mixing_results(benchmark):
    args = list(benchmark["args"])
    args[args.index("--epochs") + 1] = "2"
    result = _harness(args, benchmark["env"])
    assert result.returncode == 2
    assert "other settings" in result.stderr and "budget" in result.stderr
    assert "use a new --out" in result.stderr


@pytest.fixture(scope="module")
def warm_seeds(benchmark, tmp_path_factory):
    """The same data in warm-start mode with two seeds, two runs side by side."""
    out = tmp_path_factory.mktemp("warm") / "out"
    args = list(benchmark["args"])
    args[args.index("--out") + 1] = str(out)
    args += ["--seeds", "0", "1", "--warm-start-epochs", "1", "--jobs", "2", "--threads", "1"]
    return {"out": out, "stdout": _check(_harness(args, benchmark["env"]))}


def test_warm_start_fine_tunes_every_trainer_and_seed_from_one_stock_pre_training(warm_seeds):
    out = warm_seeds["out"]
    pretrained = out / "pretrain" / "nnUNet_results" / "Dataset991_SDMSynth"
    checkpoint = (
        pretrained / "nnUNetTrainer__nnUNetPlans_cpu_small__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    )
    assert checkpoint.is_file()
    for root in (out, out / "seed_1"):
        for trainer in TRAINERS:
            log = training_log(_fold(root, trainer))
            assert f"warm start from {checkpoint}" in log
            assert len(list((root / "predictions" / trainer).glob("*.nii.gz"))) == 2
    manifest = json.loads((out / "benchmark.json").read_text())
    assert (
        manifest["warm_start"]["budget"]["epochs"] == 1
        and manifest["warm_start"]["trainer"] == "nnUNetTrainer"
    )


def test_seeds_are_paired_with_stock_in_results(warm_seeds):
    out = warm_seeds["out"]
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1]
    assert set(results["foreground_mean_per_seed"]) == {"0", "1"}
    paired = results["paired_over_seeds"]["nnUNetTrainerSDM_Xue2020"]
    assert set(paired["HD95"]["per_seed"]) == {"0", "1"} and paired["HD95"]["kind"] == "ratio"
    assert paired["Dice"]["kind"] == "difference"
    markdown = (out / "results.md").read_text()
    assert "## All seeds [0, 1]" in markdown and "warm start: every trainer and seed fine-tuned" in markdown
    assert "| nnUNetTrainerSDM_Xue2020 | " in markdown.split("## All seeds")[1]


@pytest.fixture(scope="module")
def modes(benchmark, tmp_path_factory):
    """Stock and the flagship with the inference modes (chosen on the fold's validation cases)."""
    out = tmp_path_factory.mktemp("modes") / "out"
    args = list(benchmark["args"])
    args[args.index("--out") + 1] = str(out)
    args[args.index("--trainers") + 1 : args.index("--trainers") + 1 + len(TRAINERS)] = MODE_TRAINERS
    preset = out.parent / "goal_preset.json"  # a preset that only sets the goal; the options set the rest
    preset.write_text(json.dumps({"description": "test", "goal": GOAL}))
    args += ["--inference-modes", "--disable-tta", "--preset", str(preset)]
    return {"out": out, "args": args, "stdout": _check(_harness(args, benchmark["env"]))}


GOAL = {
    "trainer": "nnUNetTrainerSDM",
    "mode": "best",
    "against": "nnUNetTrainer",
    "against_mode": "pp",
    "hd95_ratio_at_most": 0.95,
    "hd95_interval_below": 1.0,
    "dice_difference_at_least": -0.005,
}


MODE_TRAINERS = ["nnUNetTrainer", "nnUNetTrainerSDM"]


def test_inference_modes_are_chosen_on_validation_cases_only(modes, benchmark):
    out = modes["out"]
    split = json.loads((out / "benchmark.json").read_text())["split"][0]
    for trainer in MODE_TRAINERS:
        validation = out / "validation" / trainer
        assert sorted(p.name for p in validation.glob("*.nii.gz")) == sorted(
            f"{c}.nii.gz" for c in split["val"]
        )
        assert not set(split["val"]) & set(benchmark["test_cases"])
        choice = json.loads((out / "modes" / trainer / "choice.json").read_text())
        assert (
            choice["validation_cases"] == len(split["val"]) and choice["best"] in choice["validation_means"]
        )
        modes_here = ["pp", "best"] + (
            ["sdm_guided", "sdm_guided_pp"] if trainer == "nnUNetTrainerSDM" else []
        )
        for mode in modes_here:
            folder = out / "modes" / trainer / mode
            assert sorted(p.name for p in folder.glob("*.nii.gz")) == [
                f"{c}.nii.gz" for c in benchmark["test_cases"]
            ]
            assert (folder / "summary_surface.json").is_file()
    flagship = json.loads((out / "modes" / "nnUNetTrainerSDM" / "choice.json").read_text())
    assert flagship["sdm_guided"]["depth_mm"] in (None, 0.0, 1.0, 2.0, 3.0, 5.0)
    assert set(flagship["sdm_guided"]["validation"]) == {"off", "0", "1", "2", "3", "5"}
    assert (
        out / "validation" / "nnUNetTrainerSDM" / "sdm" / "sdm.json"
    ).is_file()  # predicted with --save-sdm
    assert not (out / "modes" / "nnUNetTrainer" / "sdm_guided").exists()  # no SDM head: no SDM-guided mode


def test_inference_modes_in_results_and_resumed(modes, benchmark):
    out = modes["out"]
    results = json.loads((out / "results.json").read_text())["inference_modes"]
    against_pp = results["paired_intervals_vs_stock_pp"]
    assert "nnUNetTrainerSDM best (chosen on validation)" in against_pp and "nnUNetTrainer" in against_pp
    assert results["goal"] is None  # one seed: no interval, so the preset's goal is not evaluated
    assert results["paired_intervals_vs_stock_pp"]["nnUNetTrainerSDM"]["HD95"]["interval"] is None
    markdown = (out / "results.md").read_text()
    assert "## Inference modes, chosen on the fold's validation cases" in markdown
    assert "**Goal** (the preset's): not evaluated" in markdown
    assert "| nnUNetTrainerSDM + SDM-guided + nnU-Net pp |" in markdown
    again = _check(_harness(modes["args"], benchmark["env"]))
    assert "inference modes chosen" not in again and "nnUNetv2_predict" not in again
