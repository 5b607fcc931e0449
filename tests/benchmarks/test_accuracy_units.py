"""Fast checks of the accuracy benchmark's pieces (``benchmarks/accuracy_harness``): test split, data layout, preset, manifest, ratios."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.accuracy_harness.data import (
    Data,
    case_ids,
    check_manifest,
    choose_test_cases,
    make_manifest,
    prepare_data,
)
from benchmarks.accuracy_harness.report import (
    intervals_table,
    paired_intervals,
    paired_over_seeds,
    paired_table,
    ratios_to_stock,
    run_level_interval,
)
from benchmarks.accuracy_harness.settings import PRESETS_DIR, SPLITS_DIR, BenchmarkError, Settings, parse_args
from benchmarks.accuracy_harness.steps import (
    EpochSummary,
    first_epoch_reaching,
    pretrain_paths,
    trainer_paths,
)
from tests.conftest import SHARED_DATA

HIPPOCAMPUS = SHARED_DATA / "Dataset004_Hippocampus"


def _fake_raw(root, cases, name="Dataset042_Fake", test_cases=()):
    """A raw dataset with empty files (only the layout matters here)."""
    folder = root / name
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    for case in cases:
        (folder / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(b"")
        (folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"")
    for case in test_cases:
        (folder / "imagesTs" / f"{case}_0000.nii.gz").write_bytes(b"")
        (folder / "labelsTs" / f"{case}.nii.gz").write_bytes(b"")
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def _settings(raw, out, **kw):
    base = dict(
        raw=raw,
        out=out,
        trainers=["nnUNetTrainer"],
        epochs=1,
        iterations_per_epoch=2,
        val_iterations_per_epoch=1,
    )
    return Settings(**(base | kw))


def test_choose_test_cases_is_fixed_by_the_seed_and_independent_of_input_order():
    cases = [f"c{i:03d}" for i in range(50)]
    first = choose_test_cases(cases, 10, seed=0)
    assert first == choose_test_cases(list(reversed(cases)), 10, seed=0)
    assert first == sorted(first) and len(set(first)) == 10
    assert first != choose_test_cases(cases, 10, seed=1)


def test_fixed_list_is_held_out_of_the_planned_raw_dataset(tmp_path):
    cases = [f"case_{i:02d}" for i in range(10)]
    raw = _fake_raw(tmp_path, cases)
    (tmp_path / "test.json").write_text(json.dumps({"test_cases": ["case_03", "case_07"]}))
    out = tmp_path / "out"
    data = prepare_data(_settings(raw, out, test_cases_file=tmp_path / "test.json"))
    assert data.test_cases == ["case_03", "case_07"]
    assert data.train_cases == [c for c in cases if c not in ("case_03", "case_07")]
    planned = out / "nnUNet_raw" / "Dataset042_Fake"
    assert sorted(p.name for p in (planned / "labelsTr").iterdir()) == [
        f"{c}.nii.gz" for c in data.train_cases
    ]
    assert sorted(p.name for p in (planned / "imagesTr").iterdir()) == [
        f"{c}_0000.nii.gz" for c in data.train_cases
    ]
    assert json.loads((planned / "dataset.json").read_text())["numTraining"] == 8
    assert sorted(p.name for p in (out / "test" / "imagesTs").iterdir()) == [
        "case_03_0000.nii.gz",
        "case_07_0000.nii.gz",
    ]
    assert (out / "test" / "labelsTs" / "case_03.nii.gz").resolve() == (
        raw / "labelsTr" / "case_03.nii.gz"
    ).resolve()
    # a second call (resume) keeps the links and their times
    before = (planned / "labelsTr" / "case_00.nii.gz").lstat().st_mtime_ns
    prepare_data(_settings(raw, out, test_cases_file=tmp_path / "test.json"))
    assert (planned / "labelsTr" / "case_00.nii.gz").lstat().st_mtime_ns == before


def test_unknown_test_case_and_overlapping_test_raw_stop(tmp_path):
    raw = _fake_raw(tmp_path, [f"case_{i:02d}" for i in range(8)], test_cases=["case_20"])
    (tmp_path / "bad.json").write_text(json.dumps(["case_99"]))
    with pytest.raises(BenchmarkError, match="case_99"):
        prepare_data(_settings(raw, tmp_path / "o1", test_cases_file=tmp_path / "bad.json"))
    other = _fake_raw(tmp_path, ["case_01", "case_02"], name="Dataset043_Other")
    with pytest.raises(BenchmarkError, match="also training cases"):
        prepare_data(_settings(raw, tmp_path / "o2", test_raw=other))
    data = prepare_data(_settings(raw, tmp_path / "o3", test_raw=raw))  # imagesTs/labelsTs of the same folder
    assert data.test_cases == ["case_20"] and len(data.train_cases) == 8


def test_without_a_list_a_fraction_is_drawn_with_the_seed(tmp_path):
    raw = _fake_raw(tmp_path, [f"case_{i:02d}" for i in range(20)])
    data = prepare_data(_settings(raw, tmp_path / "out", test_fraction=0.25, seed=4))
    assert data.test_cases == choose_test_cases(data.train_cases + data.test_cases, 5, 4)


def test_labeled_cases_keep_their_labels_and_the_others_become_unlabeled_images(tmp_path):
    cases = [f"case_{i:02d}" for i in range(20)]
    raw = _fake_raw(tmp_path, cases)
    (tmp_path / "test.json").write_text(json.dumps(["case_03", "case_07"]))
    settings = _settings(raw, tmp_path / "out", test_cases_file=tmp_path / "test.json", labeled_cases=6)
    data = prepare_data(settings)
    assert len(data.train_cases) == 6 and len(data.unlabeled_cases) == 12
    assert not set(data.train_cases) & set(data.unlabeled_cases)
    assert set(data.train_cases) | set(data.unlabeled_cases) == set(cases) - {"case_03", "case_07"}
    assert data == prepare_data(settings)  # fixed: nnU-Net's split seed, not the run's
    planned = data.raw
    assert sorted(p.name for p in (planned / "labelsTr").iterdir()) == [
        f"{c}.nii.gz" for c in data.train_cases
    ]
    assert sorted(p.name for p in (planned / "imagesUnlabeled").iterdir()) == [
        f"{c}_0000.nii.gz" for c in data.unlabeled_cases
    ]
    assert json.loads((planned / "dataset.json").read_text())["numTraining"] == 6
    split = [{"train": data.train_cases[1:], "val": data.train_cases[:1]}] * 5
    assert make_manifest(settings, data, split)["unlabeled_cases"] == data.unlabeled_cases
    # the same output folder without the semi-supervised set-up: no unlabeled images left behind
    assert not prepare_data(_settings(raw, tmp_path / "out")).unlabeled_cases
    assert not (planned / "imagesUnlabeled").exists()
    with pytest.raises(BenchmarkError, match="only 18 training cases"):
        prepare_data(
            _settings(raw, tmp_path / "o2", test_cases_file=tmp_path / "test.json", labeled_cases=18)
        )


def test_manifest_change_is_refused(tmp_path):
    raw = _fake_raw(tmp_path, [f"case_{i:02d}" for i in range(10)])
    settings = _settings(raw, tmp_path / "out")
    data = prepare_data(settings)
    split = [{"train": data.train_cases[2:], "val": data.train_cases[:2]}] * 5
    check_manifest(settings.out, make_manifest(settings, data, split))
    check_manifest(settings.out, make_manifest(settings, data, split))  # same settings: fine
    other = _settings(raw, tmp_path / "out", epochs=5)
    with pytest.raises(BenchmarkError, match="budget"):
        check_manifest(settings.out, make_manifest(other, data, split))


def test_hippocampus_preset_resolves_its_files():
    settings = parse_args(["--raw", str(HIPPOCAMPUS), "--preset", "hippocampus_cpu", "--out", "/tmp/x"])
    assert settings.trainers == [
        "nnUNetTrainer",
        "nnUNetTrainerSDM_Xue2020",
        "nnUNetTrainerSDMDualHead",
        "nnUNetTrainerDistPenaltyDiceCE",
    ]
    assert settings.device == "cpu" and settings.fold == 0 and settings.seed == 0
    assert settings.plans_override is not None and settings.plans_override.is_file()
    assert settings.plans_identifier.startswith("nnUNetPlans_")
    assert settings.test_cases_file == SPLITS_DIR / "hippocampus_test_cases.json"
    overridden = parse_args(
        ["--raw", str(HIPPOCAMPUS), "--preset", "hippocampus_cpu", "--out", "/tmp/x", "--epochs", "3"]
    )
    assert overridden.epochs == 3 and overridden.iterations_per_epoch == settings.iterations_per_epoch


def test_hippocampus_test_split_file():
    content = json.loads((SPLITS_DIR / "hippocampus_test_cases.json").read_text())
    cases = content["test_cases"]
    assert len(cases) == content["n_test"] == 41 and len(set(cases)) == 41 and cases == sorted(cases)
    if not HIPPOCAMPUS.is_dir():
        pytest.skip("../shared/data/Dataset004_Hippocampus is not here")
    all_cases = case_ids(HIPPOCAMPUS / "labelsTr", ".nii.gz")
    assert len(all_cases) == content["n_cases"] == 201
    assert cases == choose_test_cases(all_cases, 41, content["seed"])


class _FakeComparison:
    def __init__(self, values):
        self.values = values
        self.methods = list(values)
        self.labels = [1, 2]
        self.metrics = ["Dice", "HD95", "ASSD"]

    def stats(self, method, label, metric):
        x = np.asarray(self.values[method][label][metric], dtype=float)
        return float(x.mean()), float(x.std(ddof=1))


def test_ratios_to_stock_per_class_and_of_the_foreground_means():
    def entry(hd1, hd2):
        return {1: {"Dice": [1, 1], "HD95": hd1, "ASSD": hd1}, 2: {"Dice": [1, 1], "HD95": hd2, "ASSD": hd2}}

    comparison = _FakeComparison({"nnUNetTrainer": entry([2, 2], [4, 4]), "X": entry([1, 1], [5, 5])})
    ratios = ratios_to_stock(comparison)
    assert ratios["nnUNetTrainer"]["1"]["HD95"] == 1.0
    assert ratios["X"]["1"]["HD95"] == 0.5 and ratios["X"]["2"]["ASSD"] == 1.25
    assert math.isclose(ratios["X"]["mean"]["HD95"], 3.0 / 3.0)
    assert ratios_to_stock(_FakeComparison({"X": entry([1, 1], [1, 1])})) == {}


def test_epoch_summary_condenses_nnunet_log_lines():
    summary = EpochSummary()
    lines = [
        "2026-01-01 00:00:00.000001: Epoch 3",
        "2026-01-01 00:00:00.000002: Current learning rate: 0.01",
        "2026-01-01 00:00:01.000000: train_loss -0.5",
        "2026-01-01 00:00:01.000001: val_loss -0.4",
        "2026-01-01 00:00:01.000002: Pseudo dice [np.float32(0.81), np.float32(nan)]",
        "2026-01-01 00:00:01.000003: Epoch time: 12.5 s",
    ]
    printed = [p for p in map(summary, lines) if p]
    assert printed == ["epoch 3: train_loss -0.5, val_loss -0.4, pseudo dice [0.81, nan], 12.5 s"]


def test_first_epoch_reaching_a_pseudo_dice():
    assert first_epoch_reaching([0.0, 0.2, 0.5, 0.4, 0.9], 0.5) == 2
    assert first_epoch_reaching([0.0, 0.49], 0.5) is None
    assert first_epoch_reaching([], 0.5) is None


def test_paired_over_seeds_ratios_and_differences_per_seed():
    per_seed = {
        0: {
            "nnUNetTrainer": {"Dice": 0.8, "HD95": 4.0, "ASSD": 1.0, "NSD@1.0mm": 0.5},
            "nnUNetTrainerSDM": {"Dice": 0.81, "HD95": 3.0, "ASSD": 1.0, "NSD@1.0mm": 0.6},
        },
        1: {
            "nnUNetTrainer": {"Dice": 0.7, "HD95": 2.0, "ASSD": 2.0, "NSD@1.0mm": 0.5},
            "nnUNetTrainerSDM": {"Dice": 0.69, "HD95": 3.0, "ASSD": None, "NSD@1.0mm": 0.4},
        },
    }
    paired = paired_over_seeds(per_seed)
    assert list(paired) == ["nnUNetTrainerSDM"]
    hd = paired["nnUNetTrainerSDM"]["HD95"]
    assert hd["kind"] == "ratio" and hd["per_seed"] == {"0": 0.75, "1": 1.5}
    assert hd["mean"] == pytest.approx(1.125) and hd["sd"] == pytest.approx(np.std([0.75, 1.5], ddof=1))
    dice = paired["nnUNetTrainerSDM"]["Dice"]
    assert dice["kind"] == "difference"
    assert dice["per_seed"]["0"] == pytest.approx(0.01) and dice["per_seed"]["1"] == pytest.approx(-0.01)
    assert dice["mean"] == pytest.approx(0.0, abs=1e-12)
    assd = paired["nnUNetTrainerSDM"]["ASSD"]  # a missing value is left out, not counted as 0
    assert assd["per_seed"] == {"0": 1.0, "1": None} and assd["mean"] == 1.0 and assd["sd"] is None
    table = paired_table(per_seed, paired)
    assert "| nnUNetTrainerSDM | 0.000 ± 0.014 (0.010, -0.010) | 1.125 ± 0.530 (0.750, 1.500)" in table


def test_seeds_and_warm_start_settings(tmp_path):
    settings = parse_args(
        [
            "--raw",
            str(tmp_path),
            "--trainers",
            "nnUNetTrainer",
            "--epochs",
            "2",
            "--iters-per-epoch",
            "3",
            "--seeds",
            "4",
            "5",
            "--warm-start-epochs",
            "7",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert settings.seed == 4 and settings.seeds == [4, 5]
    assert settings.warm_start == {
        "trainer": "nnUNetTrainer",
        "seed": 4,
        "budget": {"epochs": 7, "iterations_per_epoch": 3, "val_iterations_per_epoch": 1},
    }
    data = Data("Dataset042_Fake", 42, tmp_path, tmp_path, tmp_path, ".nii.gz", {1: "a"}, [], [], "x")
    first, second = (trainer_paths(settings, data, "nnUNetTrainer", s) for s in (4, 5))
    assert first.results_root == settings.out / "nnUNet_results"
    assert second.results_root == settings.out / "seed_5" / "nnUNet_results" and second.log_suffix == "_seed5"
    assert pretrain_paths(settings, data).model.is_relative_to(settings.out / "pretrain")
    for bad in (["--seeds", "1", "1"], ["--warm-start-epochs", "0"], ["--jobs", "0"]):
        with pytest.raises(SystemExit):
            parse_args(
                [
                    "--raw",
                    str(tmp_path),
                    "--trainers",
                    "nnUNetTrainer",
                    "--epochs",
                    "1",
                    "--iters-per-epoch",
                    "1",
                    "--out",
                    str(tmp_path / "o"),
                    *bad,
                ]
            )


def _cases(stock: np.ndarray, trainer: np.ndarray, other: np.ndarray | None = None) -> dict:
    metrics = {"Dice": 1.0, "HD95": 1.0, "ASSD": 1.0, "NSD@1.0mm": 1.0}
    made = {"nnUNetTrainer": {m: stock * f for m, f in metrics.items()}}
    made["nnUNetTrainerSDM"] = {m: trainer * f for m, f in metrics.items()}
    return made


def test_paired_intervals_call_a_consistent_gain_better_and_noise_undecided():
    generator = np.random.default_rng(0)
    stock = generator.uniform(1.0, 3.0, size=(5, 40))
    consistent = {s: _cases(stock[s], 0.8 * stock[s]) for s in range(5)}  # every case 20 % lower
    result = paired_intervals(consistent, replicates=2000)["nnUNetTrainerSDM"]
    hd = result["HD95"]
    assert hd["kind"] == "ratio" and hd["estimate"] == pytest.approx(0.8)
    assert hd["interval"][0] == pytest.approx(0.8) and hd["interval"][1] == pytest.approx(0.8)
    assert hd["verdict"] == "better" and hd["case_seeds"] == {"better": 200, "tied": 0, "worse": 0}
    assert hd["minimal_detectable_effect"] == pytest.approx(0.0, abs=1e-9) and hd["n_seeds"] == 5
    assert result["Dice"]["verdict"] == "worse"  # lower Dice is worse: the same arrays read as Dice
    noise = {s: _cases(stock[s], stock[s] * generator.uniform(0.7, 1.3, size=40)) for s in range(5)}
    noisy = paired_intervals(noise, replicates=2000)["nnUNetTrainerSDM"]["HD95"]
    assert noisy["interval"][0] < 1.0 < noisy["interval"][1] and noisy["verdict"] == "undecided"
    # paired: a shift shared by both trainers (an easy or a hard case) does not widen the interval
    shifted = {s: _cases(stock[s] + 5 * (s % 2), 0.8 * stock[s] + 4 * (s % 2)) for s in range(5)}
    assert paired_intervals(shifted, replicates=2000)["nnUNetTrainerSDM"]["HD95"]["verdict"] == "better"
    table = intervals_table({"nnUNetTrainerSDM": result}, list(range(5)), 40)
    assert "0.800 [0.800, 0.800] **better** (+-0.0 %, MDE 0.0 %; 200/0/0)" in table


def test_run_level_interval_is_a_t_interval_over_seeds_and_states_the_mde():
    """Runs are the random unit: with identical cases in every seed, the interval is the t-interval of the
    per-seed log ratios, and the MDE is (t_0.975 + t_0.8) * se."""
    from scipy import stats

    ratios = np.array([0.90, 1.02, 0.95, 0.99, 0.93, 1.01, 0.96, 0.94, 0.98, 0.97])
    ref = np.ones((10, 1))
    result = run_level_interval(ref * ratios[:, None], ref, ratio=True, replicates=100)
    logs = np.log(ratios)
    se = logs.std(ddof=1) / np.sqrt(10)
    t = stats.t.ppf(0.975, 9)
    assert result["estimate"] == pytest.approx(np.exp(logs.mean()))
    assert result["interval"] == pytest.approx([np.exp(logs.mean() - t * se), np.exp(logs.mean() + t * se)])
    assert result["minimal_detectable_effect"] == pytest.approx(np.expm1((t + stats.t.ppf(0.8, 9)) * se))
    assert result["verdict"] == "better" and result["variance_share_of_runs"] == pytest.approx(1.0)
    # five seeds of the same spread: a wider interval, not a narrower one (no anti-conservative bootstrap)
    five = run_level_interval(ref[:5] * ratios[:5, None], ref[:5], ratio=True, replicates=100)
    assert five["interval"][1] - five["interval"][0] > result["interval"][1] - result["interval"][0]
    one = run_level_interval(ref[:1] * 0.9, ref[:1], ratio=True, replicates=100)
    assert one["interval"] is None and one["verdict"] == "undecided"


def test_goal_verdict_comes_from_the_preset_and_says_when_it_is_underpowered():
    from benchmarks.accuracy_harness.report import goal_text, goal_verdict
    from benchmarks.accuracy_harness.settings import check_goal

    goal = check_goal(
        {
            "trainer": "nnUNetTrainerSDM",
            "mode": "plain",
            "against": "nnUNetTrainer",
            "against_mode": "plain",
            "hd95_ratio_at_most": 0.95,
            "hd95_interval_below": 1.0,
            "dice_difference_at_least": -0.005,
        },
        "test",
    )
    generator = np.random.default_rng(1)
    stock = generator.uniform(1.0, 3.0, size=(10, 30))
    gain = {s: _cases(stock[s], 0.9 * stock[s] * generator.uniform(0.99, 1.01)) for s in range(10)}
    verdict = goal_verdict(goal, {"nnUNetTrainer": paired_intervals(gain, replicates=500)})
    assert verdict["reached"] is False  # Dice read from the same arrays is 10 % lower: not >= -0.005
    assert verdict["checks"]["HD95 ratio <= 0.95"] and verdict["powered"]
    noisy = {s: _cases(stock[s], 0.9 * stock[s] * generator.uniform(0.5, 1.5)) for s in range(10)}
    verdict = goal_verdict(goal, {"nnUNetTrainer": paired_intervals(noisy, replicates=500)})
    assert not verdict["powered"] and "underpowered" in goal_text(verdict)
    assert goal_verdict(None, {}) is None
    with pytest.raises(BenchmarkError, match="missing keys"):
        check_goal({"trainer": "x"}, "test")
    with pytest.raises(BenchmarkError, match="mode"):
        check_goal(dict(goal, mode="fastest"), "test")


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in PRESETS_DIR.glob("*.json") if "trainers" in p.read_text())
)
def test_every_preset_resolves_its_files_and_warm_presets_have_five_seeds(preset):
    settings = parse_args(["--raw", str(HIPPOCAMPUS), "--preset", preset, "--out", "/tmp/x"])
    content = json.loads((PRESETS_DIR / f"{preset}.json").read_text())
    assert settings.plans_override is None or settings.plans_override.is_file()
    assert settings.test_cases_file is None or settings.test_cases_file.is_file()
    assert content.get("budget_note"), "every preset writes down its budget arithmetic"
    if settings.warm_start is not None:
        assert len(settings.seeds) >= 5  # paired statistics need seeds
        # inference modes chosen on the validation cases, or the preset says it scores plain predictions
        assert settings.inference_modes or "plain predictions" in content["description"]


def test_la2018_split_and_small_patch_override():
    content = json.loads((SPLITS_DIR / "la2018_test_cases.json").read_text())
    cases = content["test_cases"]
    assert len(cases) == content["n_test"] == 20 and cases == sorted(cases) and len(set(cases)) == 20
    override = json.loads((PRESETS_DIR / "la2018_cpu_small_patch.json").read_text())
    assert override["configuration"]["patch_size"] == [32, 64, 64]
    raw = SHARED_DATA / "Dataset105_LA2018"
    if raw.is_dir():
        all_cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
        assert len(all_cases) == 80 and cases == choose_test_cases(all_cases, 20, seed=0)


def test_choose_takes_the_lowest_hd95_within_the_dice_tolerance_else_the_reference():
    from benchmarks.accuracy_harness.inference import DICE_TOLERANCE, choose

    plain = {"Dice": 0.90, "HD95": 5.0}
    assert choose({"off": plain, "1": {"Dice": 0.90, "HD95": 5.0}}, "off") == "off"  # ties keep the reference
    assert (
        choose({"off": plain, "1": {"Dice": 0.899, "HD95": 4.0}, "2": {"Dice": 0.91, "HD95": 4.5}}, "off")
        == "1"
    )
    too_costly = {"Dice": 0.90 - 2 * DICE_TOLERANCE, "HD95": 1.0}
    assert choose({"off": plain, "5": too_costly}, "off") == "off"
    assert (
        choose({"plain": plain, "pp": {"Dice": 0.95, "HD95": 6.0}}, "plain") == "plain"
    )  # Dice alone is not it
