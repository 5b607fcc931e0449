"""Every benchmark script runs here, end to end on tiny data, so that none can rot unnoticed.

Each script's entry point is run as a user runs it (a subprocess with its smallest set-up) and its JSON is
read back; a failure inside a script must give a non-zero exit. ``accuracy.py`` runs in
``test_accuracy_harness.py``. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BENCHMARKS = REPO / "benchmarks"
#: every script in benchmarks/ and the test that runs it
COVERED = {
    "accuracy.py": "tests/benchmarks/test_accuracy_harness.py",
    "train_step.py": "test_train_step_tiny_reports_every_trainer_and_goal",
    "sdm_speed.py": "test_sdm_speed_quick",
    "metrics_speed.py": "test_metrics_speed_quick",
    "diagnose.py": "test_diagnose_on_the_synthetic_dataset",
    "gpu_check.sh": "test_gpu_check_refuses_a_machine_without_cuda",
}


def run_script(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "nnUNet_compile": "f", "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"}
    return subprocess.run(
        args, cwd=REPO, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=900
    )


def test_every_benchmark_script_is_run_by_a_test():
    scripts = sorted(p.name for p in BENCHMARKS.iterdir() if p.suffix in (".py", ".sh") and p.is_file())
    assert scripts == sorted(COVERED), "a benchmark script without a test here (add it to COVERED)"
    tests = Path(__file__).read_text()
    for script, test in COVERED.items():
        assert test.endswith(".py") and (REPO / test).is_file() or f"def {test}(" in tests, script


@pytest.fixture(scope="module")
def train_step_work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train_step")


def train_step(work: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCHMARKS / "train_step.py"), "--configs", "tiny", "--work", str(work)]
    command += ["--steps", "1", "--warmup", "1", "--rounds", "1", "--threads", "1", *extra]
    return run_script(command)


def test_train_step_tiny_reports_every_trainer_and_goal(train_step_work):
    result = train_step(train_step_work)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    trainers = report["configs"]["tiny"]["trainers"]
    assert set(trainers) == {"nnUNetTrainer", "nnUNetTrainerSDM", "nnUNetTrainerSDM_Xue2020"}
    for row in trainers.values():
        assert "error" not in row, row
        assert row["step_s"] > 0 and row["peak_memory_mb"] > 0 and row["aten_ops_per_step"] > 0
        assert row["aten_ops_ratio_to_stock"] == pytest.approx(
            row["aten_ops_per_step"] / trainers["nnUNetTrainer"]["aten_ops_per_step"]
        )
    flagship = trainers["nnUNetTrainerSDM"]
    assert 0 < flagship["aten_ops_sdm_targets"] < flagship["aten_ops_per_step"]
    assert flagship["sdm_target_host_syncs"] == 0 and "sdm_target_speedup_vs_chunked_baseline" in flagship
    goals = report["goals_met"]["tiny"]
    assert goals and all(isinstance(v, bool) for v in goals.values())


def test_train_step_exits_non_zero_when_a_worker_fails(train_step_work):
    result = train_step(train_step_work, "--trainers", "nnUNetTrainer", "nnUNetTrainerSDM_NoSuchTrainer")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    row = report["configs"]["tiny"]["trainers"]["nnUNetTrainerSDM_NoSuchTrainer"]
    assert row["error"].startswith("worker exited")
    assert "worker(s) failed: tiny/nnUNetTrainerSDM_NoSuchTrainer" in result.stderr


def test_sdm_speed_quick():
    result = run_script([sys.executable, str(BENCHMARKS / "sdm_speed.py"), "--quick"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["quick"] and {"sdm_speed", "data_pipeline"} <= set(report)


def test_metrics_speed_quick():
    result = run_script([sys.executable, str(BENCHMARKS / "metrics_speed.py"), "--quick"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)


def test_diagnose_on_the_synthetic_dataset(planned_synthetic, tmp_path):
    out = tmp_path / "diagnosis.json"
    command = [sys.executable, str(BENCHMARKS / "diagnose.py"), "--work", str(planned_synthetic["workdir"])]
    command += ["--dataset", "990", "--plans", "nnUNetPlans_cpu_small", "--cases", "2", "-o", str(out)]
    results = Path(planned_synthetic["env"]["nnUNet_results"])
    before = sorted(results.rglob("*"))
    result = run_script(command)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["cases"] == 2 and report["targets"] and report["gradients"]
    # its trainers' logs go to a scratch folder, not next to the real trainings' logs
    assert sorted(results.rglob("*")) == before


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real check (minutes), not this test")
    result = run_script(
        ["bash", str(BENCHMARKS / "gpu_check.sh")], env={"OUT": str(tmp_path), "PYTHON": sys.executable}
    )
    assert result.returncode != 0 and "no CUDA device" in result.stderr
    shellcheck = Path(sys.executable).parent / "shellcheck"
    checked = subprocess.run(
        [str(shellcheck), str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
