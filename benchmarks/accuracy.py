"""Accuracy benchmark: several trainers on the same data, split, fold, seed and budget; one results table.

Steps (each prints its progress; every step is skipped when its output is already there, so an interrupted
run continues where it stopped when started again with the same arguments):

1. **Data.** The raw dataset is linked (per file, read-only) into ``OUT/nnUNet_raw`` with the *training
   cases only*. The test cases come from ``--test-raw`` (a folder with ``imagesTs``/``labelsTs``, or
   ``imagesTr``/``labelsTr``), or from a fixed list of case identifiers (``--test-cases``, or the preset's
   split file), or else ``--test-fraction`` of the cases drawn with ``--seed``; those are moved out of the
   planned dataset into ``OUT/test/{imagesTs,labelsTs}``, so nnU-Net never sees them (not in planning,
   normalisation statistics, training or validation).
2. **Plan and preprocess once** (``nnUNetv2_plan_and_preprocess -c 3d_fullres``), then the plans override
   (``--plans-override``: a file, a file in ``benchmarks/presets/`` or a bundled override such as
   ``cpu_small``) as plans ``nnUNetPlans_<name>``.
3. **Split.** ``splits_final.json`` is written: nnU-Net's own 5-fold split of the training cases
   (``generate_crossval_split``, seed 12345), so every trainer trains on the cases of ``--fold`` and validates
   on the rest, whatever happens to the preprocessed folder.
4. **Train** every trainer (``nnunet_sdm.runner.train_with_budget``: nnU-Net's own lifecycle and final
   validation, results in nnU-Net's usual folder) with the same budget; one subprocess per trainer, seeded
   (``random``, ``numpy``, ``torch`` with ``--seed``; nnU-Net's data-augmentation workers and cuDNN stay
   non-deterministic). A training interrupted after a ``checkpoint_latest.pth`` continues from it.
   ``--threads N``: torch CPU threads for training (nnU-Net takes one per core, which thrashes on a shared machine);
  prediction is nnU-Net's own ``nnUNetv2_predict`` with its defaults.
5. **Predict** the test images with ``nnUNetv2_predict`` (subprocess, default settings incl. mirroring).
6. **Evaluate** with the project's surface metrics (Dice, HD95, ASSD, NSD at 1 and 2 mm;
   ``nnunet_sdm.evaluation``), written per trainer as ``summary_surface.json`` beside its predictions.
7. **Compare**: ``results.json`` (settings, timings, per-class mean/sd/n, per-case values, ratios),
   ``results.md`` (per class and metric mean +- sd for every trainer, best in bold; the ratio of each
   trainer's HD95 and ASSD to ``nnUNetTrainer``'s, when each trainer's validation pseudo Dice reached 0.5)
   and ``results.png`` (violins), ``training_curves.png`` (validation pseudo Dice per epoch, from nnU-Net's
   logger in ``checkpoint_final.pth``).

A trainer counts as finished when its ``checkpoint_final.pth``, a prediction for every test case and an
up-to-date ``summary_surface.json`` exist; it is then neither trained nor predicted again. The settings
that make trainers comparable (cases, split, plans, budget, fold, seed) are stored in ``OUT/benchmark.json``;
a rerun with different ones stops with a message instead of mixing results. Trainers can be added to a
finished run.

``--seeds S1 S2 ...`` repeats step 4-6 per seed (the first seed in ``OUT``, the others in ``OUT/seed_<s>``) and
adds the per-seed ratios to stock, paired by seed; ``--warm-start-epochs N`` first pre-trains stock once
(``OUT/pretrain``) and fine-tunes every trainer and seed from that checkpoint (docs/accuracy.md).

Usage::

    python benchmarks/accuracy.py --raw ../shared/data/Dataset004_Hippocampus --preset hippocampus_cpu \\
        --out /tmp/acc_hippocampus
    python benchmarks/accuracy.py --raw RAW --test-raw TEST --trainers nnUNetTrainer nnUNetTrainerSDM \\
        --plans-override cpu_small --epochs 5 --iters-per-epoch 50 --out OUT [--device cuda]
    python benchmarks/accuracy.py --raw ../shared/data/Dataset004_Hippocampus --preset hippocampus_cpu_warm \\
        --out /tmp/acc_warm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import nnunet_sdm  # noqa: F401
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCHMARKS = Path(__file__).resolve().parent
PRESETS_DIR = BENCHMARKS / "presets"
SPLITS_DIR = BENCHMARKS / "splits"
STOCK = "nnUNetTrainer"
CONFIGURATION = "3d_fullres"
TOLERANCES = (1.0, 2.0)
SPLIT_SEED = 12345  # nnU-Net's own seed for splits_final.json
N_FOLDS = 5
RATIO_METRICS = ("HD95", "ASSD")
MANIFEST = "benchmark.json"
# settings that must not change between runs into the same output folder
COMPARABLE_KEYS = (
    "dataset",
    "configuration",
    "plans_identifier",
    "plans_override",
    "budget",
    "fold",
    "seed",
    "warm_start",
    "tta",
    "train_cases",
    "test_cases",
    "split",
)


class BenchmarkError(RuntimeError):
    """A problem with the inputs or the output folder; the message says what to do."""


# ----------------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    raw: Path
    out: Path
    trainers: list[str]
    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    test_raw: Path | None = None
    test_cases_file: Path | None = None
    test_fraction: float = 0.2
    plans_override: Path | None = None
    plans_identifier: str = "nnUNetPlans"
    device: str = "cpu"
    fold: int = 0
    seed: int = 0
    #: all seeds (the first is ``seed``); every trainer is trained once per seed, paired by seed
    seeds: list[int] = field(default_factory=list)
    #: warm-start mode: epochs of the one shared stock pre-training (None: every trainer from scratch)
    warm_start_epochs: int | None = None
    #: trainings (and predictions) run side by side
    jobs: int = 1
    #: test-time mirroring in nnUNetv2_predict (nnU-Net's default; --disable-tta turns it off for all)
    tta: bool = True
    #: nnU-Net's final validation of the fold's validation cases after each training (not used here)
    final_validation: bool = False
    num_processes: int = 2
    threads: int | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            self.seeds = [self.seed]
        if self.seeds[0] != self.seed:
            raise ValueError(f"the first of seeds {self.seeds} must be seed {self.seed}")

    @property
    def budget(self) -> dict[str, int]:
        return {
            "epochs": self.epochs,
            "iterations_per_epoch": self.iterations_per_epoch,
            "val_iterations_per_epoch": self.val_iterations_per_epoch,
        }

    @property
    def warm_start(self) -> dict | None:
        """The shared stock pre-training of the warm-start mode (seed ``seed``), or None."""
        if self.warm_start_epochs is None:
            return None
        return {
            "trainer": STOCK,
            "seed": self.seed,
            "budget": dict(self.budget, epochs=self.warm_start_epochs),
        }


def load_preset(name_or_path: str) -> tuple[dict, Path]:
    """A preset (``benchmarks/presets/<name>.json`` or a path) and the folder its relative paths start from."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PRESETS_DIR / f"{name_or_path.removesuffix('.json')}.json"
    if not path.is_file():
        available = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise BenchmarkError(f"no preset {name_or_path!r}; available in {PRESETS_DIR}: {available}")
    preset = json.loads(path.read_text())
    known = {
        "description",
        "dataset",
        "trainers",
        "epochs",
        "iterations_per_epoch",
        "val_iterations_per_epoch",
        "plans_override",
        "test_cases",
        "device",
        "fold",
        "seed",
        "seeds",
        "warm_start_epochs",
        "disable_tta",
        "threads",
        "budget_note",
    }
    unknown = set(preset) - known
    if unknown:
        raise BenchmarkError(f"{path}: unknown preset key(s) {sorted(unknown)}; known: {sorted(known)}")
    return preset, path.parent


def resolve_override(value: str, base: Path | None = None) -> Path:
    """A plans override: a file (relative to ``base`` or the cwd), a file in ``benchmarks/presets`` or bundled."""
    from nnunet_sdm.plans import bundled_override

    candidates = [Path(value)]
    if base is not None:
        candidates.insert(0, base / value)
    candidates += [PRESETS_DIR / value, PRESETS_DIR / f"{value}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    try:
        return bundled_override(value.removesuffix(".json"))
    except FileNotFoundError as error:
        raise BenchmarkError(f"plans override {value!r}: not a file, not in {PRESETS_DIR}; {error}") from None


def plans_identifier_for(override: Path | None) -> str:
    if override is None:
        return "nnUNetPlans"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", override.stem).strip("_") or "override"
    stem = stem.removesuffix("_plans") or stem
    return f"nnUNetPlans_{stem}".replace("__", "_")


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="benchmarks/accuracy.py",
        description="Train trainers on the same split and budget, predict and evaluate held-out cases, compare.",
    )
    parser.add_argument(
        "--raw", required=True, type=Path, help="nnU-Net raw dataset folder (DatasetXXX_Name)"
    )
    parser.add_argument(
        "--test-raw",
        type=Path,
        help="folder with the test cases (imagesTs + labelsTs, or imagesTr + labelsTr); default: a fixed "
        "list of cases held out of --raw",
    )
    parser.add_argument(
        "--test-cases",
        type=Path,
        help="JSON with the held-out case identifiers of --raw ({'test_cases': [...]} or a list)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="without --test-raw or a test list: this fraction of --raw is held out, drawn with --seed (0.2)",
    )
    parser.add_argument("--trainers", nargs="+", help=f"trainer class names (include {STOCK} for the ratios)")
    parser.add_argument(
        "--plans-override",
        help="plans override: a JSON file, a file in benchmarks/presets, or e.g. cpu_small",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iters-per-epoch", type=int, dest="iterations_per_epoch")
    parser.add_argument("--val-iters-per-epoch", type=int, dest="val_iterations_per_epoch")
    parser.add_argument("--preset", help=f"a preset in {PRESETS_DIR} (or a path); other options override it")
    parser.add_argument("--out", required=True, type=Path, help="work and results folder (resumable)")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="default: the preset's, else cuda if available"
    )
    parser.add_argument("--fold", type=int, choices=range(N_FOLDS), default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train every trainer once per seed (paired by seed: per-seed ratios to stock and their spread); "
        "the first seed also draws the test split when it is drawn",
    )
    parser.add_argument(
        "--warm-start-epochs",
        type=int,
        dest="warm_start_epochs",
        help="warm-start mode: one shared stock pre-training of this many epochs (same iterations per "
        "epoch), then every trainer and seed fine-tuned from its checkpoint (all weights, output layers "
        "included) for the budget",
    )
    parser.add_argument(
        "--disable-tta",
        action="store_true",
        default=None,
        help="predict without test-time mirroring (8x less prediction time; the same for every trainer)",
    )
    parser.add_argument(
        "--final-validation",
        action="store_true",
        help="also run nnU-Net's final validation of the fold's validation cases after each training "
        "(what nnUNetv2_find_best_configuration needs; the benchmark itself scores the test cases only)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings run side by side (each with --threads torch threads); 2 on a 2-core CPU with --threads 1",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU: torch threads for training (default: the preset's, else nnU-Net's choice, all "
        "cores); 1 avoids the thread thrashing of a machine shared with other jobs",
    )
    parser.add_argument(
        "-np",
        "--num-processes",
        type=int,
        default=2,
        dest="num_processes",
        help="for preprocessing/evaluation",
    )
    args = parser.parse_args(argv)

    preset: dict = {}
    preset_dir: Path | None = None
    if args.preset:
        preset, preset_dir = load_preset(args.preset)

    def pick(name: str, default=None):
        value = getattr(args, name, None)
        return value if value is not None else preset.get(name, default)

    trainers = args.trainers or preset.get("trainers")
    if not trainers:
        parser.error("give --trainers (or a --preset with trainers)")
    if len(set(trainers)) != len(trainers):
        parser.error(f"--trainers has duplicates: {trainers}")
    epochs, iterations = pick("epochs"), pick("iterations_per_epoch")
    if epochs is None or iterations is None:
        parser.error("give --epochs and --iters-per-epoch (or a --preset)")
    val_iterations = pick("val_iterations_per_epoch") or max(1, iterations // 5)
    for name, value in (
        ("--epochs", epochs),
        ("--iters-per-epoch", iterations),
        ("val iterations", val_iterations),
    ):
        if int(value) < 1:
            parser.error(f"{name} must be >= 1, got {value}")

    override = None
    if args.plans_override:
        override = resolve_override(args.plans_override)
    elif preset.get("plans_override"):
        override = resolve_override(preset["plans_override"], preset_dir)

    test_cases_file = args.test_cases
    if test_cases_file is None and args.test_raw is None and preset.get("test_cases"):
        test_cases_file = (preset_dir / preset["test_cases"]).resolve()
    if args.test_raw is not None and args.test_cases is not None:
        parser.error("give --test-raw or --test-cases, not both")
    fraction = args.test_fraction if args.test_fraction is not None else 0.2
    if not 0 < fraction < 1:
        parser.error(f"--test-fraction must be in (0, 1), got {fraction}")

    seeds = pick("seeds")
    seed = int(seeds[0]) if seeds else int(pick("seed", 0))
    seeds = [int(x) for x in seeds] if seeds else [seed]
    if len(set(seeds)) != len(seeds):
        parser.error(f"--seeds has duplicates: {seeds}")
    warm_start_epochs = pick("warm_start_epochs")
    if warm_start_epochs is not None and int(warm_start_epochs) < 1:
        parser.error(f"--warm-start-epochs must be >= 1, got {warm_start_epochs}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")

    device = args.device or preset.get("device")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Settings(
        raw=args.raw.resolve(),
        out=args.out.resolve(),
        trainers=list(trainers),
        epochs=int(epochs),
        iterations_per_epoch=int(iterations),
        val_iterations_per_epoch=int(val_iterations),
        test_raw=args.test_raw.resolve() if args.test_raw else None,
        test_cases_file=test_cases_file,
        test_fraction=fraction,
        plans_override=override,
        plans_identifier=plans_identifier_for(override),
        device=device,
        fold=int(pick("fold", 0)),
        seed=seed,
        seeds=seeds,
        warm_start_epochs=int(warm_start_epochs) if warm_start_epochs is not None else None,
        jobs=args.jobs,
        tta=not pick("disable_tta", False),
        final_validation=args.final_validation,
        num_processes=max(1, args.num_processes),
        threads=_threads(pick("threads"), parser),
        preset=args.preset,
    )


def _threads(value, parser) -> int | None:
    if value is None:
        return None
    if int(value) < 1:
        parser.error(f"--threads must be >= 1, got {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------------
# progress
# ----------------------------------------------------------------------------------------------------
_STARTED = time.time()


def step(message: str) -> None:
    print(f"\n==> [{time.time() - _STARTED:7.0f} s] {message}", flush=True)


def note(message: str) -> None:
    print(f"    {message}", flush=True)


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
@dataclass
class Data:
    dataset_name: str
    dataset_id: int
    raw: Path  # OUT/nnUNet_raw/DatasetXXX_Name (training cases only)
    test_images: Path
    test_labels: Path
    file_ending: str
    labels: dict[int, str]
    train_cases: list[str]
    test_cases: list[str]
    test_source: str
    channels: list[str] = field(default_factory=list)


def dataset_id_of(folder: Path) -> int:
    match = re.fullmatch(r"Dataset(\d{3})_[A-Za-z0-9_-]+", folder.name)
    if not match:
        raise BenchmarkError(f"{folder}: not an nnU-Net raw dataset folder name (DatasetXXX_Name)")
    return int(match.group(1))


def case_ids(labels_dir: Path, file_ending: str) -> list[str]:
    if not labels_dir.is_dir():
        raise BenchmarkError(f"{labels_dir}: no such folder")
    cases = sorted(p.name[: -len(file_ending)] for p in labels_dir.iterdir() if p.name.endswith(file_ending))
    if not cases:
        raise BenchmarkError(f"{labels_dir}: no *{file_ending} label files")
    return cases


def choose_test_cases(cases: list[str], n_test: int, seed: int) -> list[str]:
    """``n_test`` of ``cases`` (sorted first), drawn without replacement by ``numpy.random.default_rng(seed)``."""
    cases = sorted(cases)
    if not 0 < n_test < len(cases):
        raise BenchmarkError(f"cannot hold out {n_test} of {len(cases)} cases")
    chosen = np.random.default_rng(seed).choice(len(cases), size=n_test, replace=False)
    return sorted(cases[i] for i in chosen)


def read_case_list(path: Path) -> list[str]:
    content = json.loads(Path(path).read_text())
    cases = content["test_cases"] if isinstance(content, dict) else content
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases) or not cases:
        raise BenchmarkError(f"{path}: expected a non-empty list of case identifiers under 'test_cases'")
    return sorted(cases)


def _image_files(images_dir: Path, case: str, file_ending: str, n_channels: int) -> list[Path]:
    files = [images_dir / f"{case}_{c:04d}{file_ending}" for c in range(n_channels)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise BenchmarkError(f"{images_dir}: missing image file(s) {missing} of case {case}")
    return files


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        if target.is_symlink() and Path(os.readlink(target)) == source:
            return
        target.unlink()
    target.symlink_to(source)


def _sync_links(folder: Path, wanted: dict[str, Path]) -> None:
    """Make ``folder`` hold exactly the symlinks ``wanted`` (name -> source)."""
    folder.mkdir(parents=True, exist_ok=True)
    for existing in folder.iterdir():
        if existing.name not in wanted:
            existing.unlink()
    for name, source in wanted.items():
        _link(source, folder / name)


def prepare_data(settings: Settings) -> Data:
    """Link the training cases into ``OUT/nnUNet_raw`` and the test cases into ``OUT/test``."""
    raw = settings.raw
    dataset_json = raw / "dataset.json"
    if not dataset_json.is_file():
        raise BenchmarkError(f"{raw}: no dataset.json (is --raw an nnU-Net raw dataset folder?)")
    meta = json.loads(dataset_json.read_text())
    file_ending = meta.get("file_ending", ".nii.gz")
    channels = list(meta.get("channel_names", meta.get("modality", {"0": "image"})).values())
    labels = {
        int(v): k for k, v in meta.get("labels", {}).items() if k != "ignore" and not isinstance(v, list)
    }
    if any(isinstance(v, list) for v in meta.get("labels", {}).values()):
        raise BenchmarkError(f"{dataset_json}: region-based labels are not supported by this benchmark")
    all_cases = case_ids(raw / "labelsTr", file_ending)

    if settings.test_raw is not None:
        test_root = settings.test_raw
        has_ts = (test_root / "labelsTs").is_dir() and any((test_root / "labelsTs").glob(f"*{file_ending}"))
        sub = ("imagesTs", "labelsTs") if has_ts else ("imagesTr", "labelsTr")
        test_images_src, test_labels_src = test_root / sub[0], test_root / sub[1]
        test_cases = case_ids(test_labels_src, file_ending)
        train_cases = all_cases
        overlap = sorted(set(test_cases) & set(train_cases))
        if overlap:
            raise BenchmarkError(
                f"{len(overlap)} test case(s) of {test_labels_src} are also training cases of {raw}: {overlap[:5]}"
            )
        source = f"--test-raw {test_root}"
    else:
        test_images_src, test_labels_src = raw / "imagesTr", raw / "labelsTr"
        if settings.test_cases_file is not None:
            test_cases = read_case_list(settings.test_cases_file)
            unknown = sorted(set(test_cases) - set(all_cases))
            if unknown:
                raise BenchmarkError(
                    f"{settings.test_cases_file}: {len(unknown)} case(s) not in {raw / 'labelsTr'}: {unknown[:5]}"
                )
            source = f"fixed list {settings.test_cases_file}"
        else:
            n_test = max(1, round(settings.test_fraction * len(all_cases)))
            test_cases = choose_test_cases(all_cases, n_test, settings.seed)
            source = f"{n_test} of {len(all_cases)} cases drawn with seed {settings.seed}"
        held_out = set(test_cases)
        train_cases = [c for c in all_cases if c not in held_out]
    if len(train_cases) < N_FOLDS:
        raise BenchmarkError(
            f"{len(train_cases)} training cases: need at least {N_FOLDS} for the 5-fold split"
        )

    name = raw.name
    dataset_id = dataset_id_of(raw)
    target = settings.out / "nnUNet_raw" / name
    images: dict[str, Path] = {}
    for case in train_cases:
        for f in _image_files(raw / "imagesTr", case, file_ending, len(channels)):
            images[f.name] = f.resolve()
    _sync_links(target / "imagesTr", images)
    _sync_links(
        target / "labelsTr",
        {f"{c}{file_ending}": (raw / "labelsTr" / f"{c}{file_ending}").resolve() for c in train_cases},
    )
    new_meta = dict(meta, numTraining=len(train_cases))
    new_meta.pop("numTest", None)
    _write_if_changed(target / "dataset.json", json.dumps(new_meta, indent=2))

    test_dir = settings.out / "test"
    test_images = {}
    for case in test_cases:
        for f in _image_files(test_images_src, case, file_ending, len(channels)):
            test_images[f.name] = f.resolve()
    _sync_links(test_dir / "imagesTs", test_images)
    _sync_links(
        test_dir / "labelsTs",
        {f"{c}{file_ending}": (test_labels_src / f"{c}{file_ending}").resolve() for c in test_cases},
    )
    _write_if_changed(test_dir / "dataset.json", json.dumps(dict(meta, numTest=len(test_cases)), indent=2))
    return Data(
        dataset_name=name,
        dataset_id=dataset_id,
        raw=target,
        test_images=test_dir / "imagesTs",
        test_labels=test_dir / "labelsTs",
        file_ending=file_ending,
        labels={k: v for k, v in sorted(labels.items()) if k != 0},
        train_cases=train_cases,
        test_cases=sorted(test_cases),
        test_source=source,
        channels=channels,
    )


def _write_if_changed(path: Path, text: str) -> None:
    """Write only on a change, so the files' times (which resume checks rely on) stay put."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


# ----------------------------------------------------------------------------------------------------
# manifest (what makes the trainers of one output folder comparable)
# ----------------------------------------------------------------------------------------------------
def make_manifest(settings: Settings, data: Data, split: list[dict]) -> dict:
    override = json.loads(settings.plans_override.read_text()) if settings.plans_override else None
    return {
        "dataset": data.dataset_name,
        "configuration": CONFIGURATION,
        "plans_identifier": settings.plans_identifier,
        "plans_override": override,
        "plans_override_file": str(settings.plans_override) if settings.plans_override else None,
        "budget": settings.budget,
        "fold": settings.fold,
        "seed": settings.seed,
        "warm_start": settings.warm_start,
        "tta": settings.tta,
        "train_cases": data.train_cases,
        "test_cases": data.test_cases,
        "test_source": data.test_source,
        "split": split,
        "raw": str(settings.raw),
        "preset": settings.preset,
    }


def check_manifest(out: Path, manifest: dict) -> None:
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in COMPARABLE_KEYS if old.get(k) != manifest.get(k)]
        if changed:
            details = "; ".join(
                f"{k}: was {_short(old.get(k))}, now {_short(manifest.get(k))}" for k in changed
            )
            raise BenchmarkError(
                f"{out} holds a benchmark with other settings ({details}). Trainers trained under different "
                "settings are not comparable: use a new --out (or delete this one)."
            )
    _write_if_changed(path, json.dumps(manifest, indent=2))


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------------------------------
# nnU-Net steps
# ----------------------------------------------------------------------------------------------------
class EpochSummary:
    """Condenses nnU-Net's per-epoch log lines into one progress line per epoch."""

    FIELDS = re.compile(
        r": (Epoch (\d+)|train_loss (\S+)|val_loss (\S+)|Pseudo dice (.+)|Epoch time: (\S+) s)\s*$"
    )

    def __init__(self) -> None:
        self.epoch: dict[str, str] = {}

    def __call__(self, line: str) -> str | None:
        match = self.FIELDS.search(line)
        if match is None:
            return None
        epoch, train_loss, val_loss, dice, seconds = match.group(2, 3, 4, 5, 6)
        if epoch is not None:
            self.epoch = {"epoch": epoch}
        elif train_loss is not None:
            self.epoch["train_loss"] = train_loss
        elif val_loss is not None:
            self.epoch["val_loss"] = val_loss
        elif dice is not None:
            self.epoch["pseudo_dice"] = re.sub(r"np\.float\d+\(([^)]*)\)", r"\1", dice.strip())
        elif seconds is not None:
            e = self.epoch
            return (
                f"epoch {e.get('epoch', '?')}: train_loss {e.get('train_loss', '?')}, "
                f"val_loss {e.get('val_loss', '?')}, pseudo dice {e.get('pseudo_dice', '?')}, {seconds} s"
            )
        return None


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(command: list[str], env: dict[str, str], log: Path, echo=None) -> float:
    """Run ``command`` with its output in ``log``; ``echo(line)`` may return a progress line to print.

    Returns the CPU seconds (user + sys) of the command and the processes it waited for."""
    cpu = _children_cpu_seconds()
    note("$ " + " ".join(command))
    note(f"log: {log}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            handle.write(line)
            progress = echo(line) if echo is not None else None
            if progress:
                print("      " + progress, flush=True)
        returncode = process.wait()
    if returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"command failed ({returncode}), see {log}:\n" + "\n".join(tail))
    return _children_cpu_seconds() - cpu


def plan_and_preprocess(settings: Settings, data: Data, env: dict[str, str]) -> Path:
    from nnunet_sdm.demo import nnunet_command
    from nnunet_sdm.plans import needs_preprocessing, write_plans

    preprocessed = settings.out / "nnUNet_preprocessed" / data.dataset_name
    done = settings.out / "state" / "preprocessed.done"
    if done.is_file() and (preprocessed / "nnUNetPlans.json").is_file():
        note(f"already planned and preprocessed: {preprocessed}")
    else:
        run_logged(
            [
                nnunet_command("nnUNetv2_plan_and_preprocess"),
                "-d",
                str(data.dataset_id),
                "-c",
                CONFIGURATION,
                "-np",
                str(settings.num_processes),
                "--verify_dataset_integrity",
            ],
            env,
            settings.out / "logs" / "plan_and_preprocess.log",
        )
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    if settings.plans_override is not None:
        plans_file = preprocessed / f"{settings.plans_identifier}.json"
        previous = plans_file.read_text() if plans_file.is_file() else None
        write_plans(preprocessed, settings.plans_override, settings.plans_identifier, CONFIGURATION)
        if previous is not None and plans_file.read_text() == previous:
            note(f"plans {settings.plans_identifier} unchanged")
        else:
            note(f"wrote plans {plans_file} from {settings.plans_override}")
        if needs_preprocessing(preprocessed, settings.plans_identifier, CONFIGURATION):
            run_logged(
                [
                    nnunet_command("nnUNetv2_preprocess"),
                    "-d",
                    str(data.dataset_id),
                    "-c",
                    CONFIGURATION,
                    "-plans_name",
                    settings.plans_identifier,
                    "-np",
                    str(settings.num_processes),
                ],
                env,
                settings.out / "logs" / f"preprocess_{settings.plans_identifier}.log",
            )
    plans = json.loads((preprocessed / f"{settings.plans_identifier}.json").read_text())
    config = plans["configurations"][CONFIGURATION]
    arch = config["architecture"]["arch_kwargs"]
    note(
        f"plans {settings.plans_identifier}: patch {config['patch_size']}, batch {config['batch_size']}, "
        f"spacing {config['spacing']}, features {arch.get('features_per_stage')}"
    )
    return preprocessed


def make_split(train_cases: list[str]) -> list[dict[str, list[str]]]:
    """nnU-Net's default 5-fold split of the training cases (what nnU-Net would write itself)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    return [
        {"train": sorted(map(str, s["train"])), "val": sorted(map(str, s["val"]))}
        for s in generate_crossval_split(sorted(train_cases), seed=SPLIT_SEED, n_splits=N_FOLDS)
    ]


def write_split(preprocessed: Path, split: list[dict]) -> Path:
    path = preprocessed / "splits_final.json"
    _write_if_changed(path, json.dumps(split, indent=4))
    return path


# ----------------------------------------------------------------------------------------------------
# per trainer
# ----------------------------------------------------------------------------------------------------
@dataclass
class TrainerPaths:
    model: Path  # nnU-Net's fold folder
    predictions: Path
    state: Path
    results_root: Path  # nnUNet_results of this run
    log_suffix: str = ""

    @property
    def checkpoint_final(self) -> Path:
        return self.model / "checkpoint_final.pth"

    @property
    def checkpoint_latest(self) -> Path:
        return self.model / "checkpoint_latest.pth"

    @property
    def summary(self) -> Path:
        return self.predictions / "summary_surface.json"


def run_root(settings: Settings, seed: int | None = None) -> Path:
    """Folder of one seed's runs: ``OUT`` for the first seed, ``OUT/seed_<s>`` for the others."""
    return settings.out if seed is None or seed == settings.seed else settings.out / f"seed_{seed}"


PRETRAIN_ROOT = "pretrain"


def trainer_paths(settings: Settings, data: Data, trainer: str, seed: int | None = None) -> TrainerPaths:
    root = run_root(settings, seed)
    return _paths(settings, data, trainer, root, "" if root == settings.out else f"_seed{seed}")


def pretrain_paths(settings: Settings, data: Data) -> TrainerPaths:
    return _paths(settings, data, STOCK, settings.out / PRETRAIN_ROOT, "_pretrain")


def _paths(settings: Settings, data: Data, trainer: str, root: Path, log_suffix: str) -> TrainerPaths:
    model = (
        root
        / "nnUNet_results"
        / data.dataset_name
        / f"{trainer}__{settings.plans_identifier}__{CONFIGURATION}"
        / f"fold_{settings.fold}"
    )
    return TrainerPaths(
        model=model,
        predictions=root / "predictions" / trainer,
        state=root / "state" / f"{trainer}.json",
        results_root=root / "nnUNet_results",
        log_suffix=log_suffix,
    )


def run_environment(env: dict[str, str], paths: TrainerPaths) -> dict[str, str]:
    """``env`` with this run's own ``nnUNet_results`` (seeds and the pre-training never share a folder)."""
    return dict(env, nnUNet_results=str(paths.results_root))


def predictions_complete(paths: TrainerPaths, data: Data) -> bool:
    if not paths.checkpoint_final.is_file():
        return False
    trained = paths.checkpoint_final.stat().st_mtime
    for case in data.test_cases:
        f = paths.predictions / f"{case}{data.file_ending}"
        if not f.is_file() or f.stat().st_mtime < trained:
            return False
    return True


def summary_up_to_date(paths: TrainerPaths, data: Data) -> bool:
    from nnunet_sdm.evaluation.compare import summary_matches

    if not paths.summary.is_file():
        return False
    try:
        summary = json.loads(paths.summary.read_text())
    except json.JSONDecodeError:
        return False
    ok, _ = summary_matches(
        summary,
        paths.summary,
        data.test_labels,
        paths.predictions,
        list(data.labels),
        TOLERANCES,
        data.file_ending,
    )
    return ok


def is_finished(paths: TrainerPaths, data: Data) -> bool:
    return predictions_complete(paths, data) and summary_up_to_date(paths, data)


def _read_state(paths: TrainerPaths) -> dict:
    return json.loads(paths.state.read_text()) if paths.state.is_file() else {}


def _write_state(paths: TrainerPaths, state: dict) -> None:
    paths.state.parent.mkdir(parents=True, exist_ok=True)
    paths.state.write_text(json.dumps(state, indent=2))


EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


CURVE_KEYS = ("mean_fg_dice", "ema_fg_dice", "train_losses", "val_losses")


def training_curves(checkpoint: Path) -> dict[str, list[float]]:
    """Per-epoch curves of nnU-Net's logger (``checkpoint["logging"]``): the validation pseudo Dice (mean
    over the foreground classes, nnU-Net's EMA of it, and per class) and the train / validation losses."""
    import torch

    logging = torch.load(checkpoint, map_location="cpu", weights_only=False).get("logging") or {}
    curves = {key: [float(v) for v in logging.get(key, [])] for key in CURVE_KEYS}
    # per foreground class, per epoch (nnU-Net's "dice_per_class_or_region")
    curves["dice_per_class"] = [
        [float(v) for v in epoch] for epoch in logging.get("dice_per_class_or_region", [])
    ]
    return curves


def first_epoch_reaching(values: list[float], threshold: float) -> int | None:
    return next((epoch for epoch, v in enumerate(values) if v >= threshold), None)


def epoch_times(model: Path) -> list[float]:
    """Seconds per epoch, from nnU-Net's training logs in the fold folder (all of them, oldest first)."""
    times: list[float] = []
    for log in sorted(model.glob("training_log_*.txt")):
        times += [float(m.group(1)) for m in EPOCH_TIME.finditer(log.read_text())]
    return times


def train(
    settings: Settings,
    data: Data,
    trainer: str,
    paths: TrainerPaths,
    env: dict[str, str],
    seed: int | None = None,
    budget: dict[str, int] | None = None,
    warm_start: Path | None = None,
) -> tuple[float, float]:
    resume = paths.checkpoint_latest.is_file()
    spec = {
        "dataset": data.dataset_id,
        "trainer": trainer,
        "plans": settings.plans_identifier,
        "fold": settings.fold,
        "budget": budget or settings.budget,
        "device": settings.device,
        "seed": settings.seed if seed is None else seed,
        "threads": settings.threads,
        "continue_training": resume,
        # a resumed fine-tuning continues from its own checkpoint, not from the pre-training
        "warm_start": str(warm_start) if warm_start is not None and not resume else None,
        "final_validation": settings.final_validation,
    }
    if resume:
        note(f"continuing from {paths.checkpoint_latest}")
    elif warm_start is not None:
        note(f"warm start from {warm_start}")
    started = time.time()
    cpu = run_logged(
        [sys.executable, str(Path(__file__).resolve()), "_train_one", json.dumps(spec)],
        run_environment(env, paths),
        settings.out / "logs" / f"train_{trainer}{paths.log_suffix}.log",
        echo=EpochSummary(),
    )
    if not paths.checkpoint_final.is_file():
        raise RuntimeError(f"training {trainer} ended without {paths.checkpoint_final}")
    return time.time() - started, cpu


def _train_one(spec_json: str) -> int:
    """Subprocess entry: seed everything, then ``train_with_budget`` (nnU-Net's lifecycle)."""
    spec = json.loads(spec_json)
    import torch

    from nnunet_sdm.runner import Budget, train_with_budget

    seed = int(spec["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    budget = Budget(**spec["budget"])
    folder = train_with_budget(
        spec["dataset"],
        CONFIGURATION,
        spec["fold"],
        spec["trainer"],
        budget,
        plans_identifier=spec["plans"],
        device=torch.device(spec["device"]),
        continue_training=bool(spec["continue_training"]),
        threads=spec.get("threads"),
        warm_start=spec.get("warm_start"),
        final_validation=spec.get("final_validation", True),
    )
    print(f"trained: {folder}", flush=True)
    return 0


def predict(
    settings: Settings, data: Data, trainer: str, paths: TrainerPaths, env: dict[str, str]
) -> tuple[float, float]:
    from nnunet_sdm.demo import nnunet_command

    if paths.predictions.is_dir():
        trained = paths.checkpoint_final.stat().st_mtime
        stale = [p for p in paths.predictions.iterdir() if p.is_file() and p.stat().st_mtime < trained]
        for p in stale:  # predictions of an older model
            p.unlink()
    command = [nnunet_command("nnUNetv2_predict")]
    started = time.time()
    cpu = run_logged(
        [
            *command,
            "-i",
            str(data.test_images),
            "-o",
            str(paths.predictions),
            "-d",
            str(data.dataset_id),
            "-c",
            CONFIGURATION,
            "-tr",
            trainer,
            "-p",
            settings.plans_identifier,
            "-f",
            str(settings.fold),
            "-device",
            settings.device,
            "-npp",
            "1",
            "-nps",
            "1",
            "--continue_prediction",
            *([] if settings.tta else ["--disable_tta"]),
        ],
        run_environment(env, paths),
        settings.out / "logs" / f"predict_{trainer}{paths.log_suffix}.log",
    )
    missing = [c for c in data.test_cases if not (paths.predictions / f"{c}{data.file_ending}").is_file()]
    if missing:
        raise RuntimeError(f"nnUNetv2_predict with {trainer} wrote no prediction for {missing[:5]}")
    return time.time() - started, cpu


def evaluate(settings: Settings, data: Data, paths: TrainerPaths) -> float:
    from nnunet_sdm.evaluation.compare import load_or_evaluate

    started = time.time()
    load_or_evaluate(
        paths.predictions,
        data.test_labels,
        list(data.labels),
        TOLERANCES,
        num_workers=settings.num_processes,
        file_ending=data.file_ending,
        progress=False,
        log=note,
    )
    return time.time() - started


def pretrain(settings: Settings, data: Data, env: dict[str, str]) -> Path:
    """Warm-start mode: the one stock pre-training every run starts from; its ``checkpoint_final.pth``."""
    spec = settings.warm_start
    paths = pretrain_paths(settings, data)
    if paths.checkpoint_final.is_file():
        note(f"already pre-trained: {paths.checkpoint_final}")
        return paths.checkpoint_final
    state = _read_state(paths)
    state["train_seconds"], state["train_cpu_seconds"] = train(
        settings, data, spec["trainer"], paths, env, seed=spec["seed"], budget=spec["budget"]
    )
    _write_state(paths, state)
    note(f"pre-trained in {state['train_seconds']:.0f} s: {paths.checkpoint_final}")
    return paths.checkpoint_final


def run_trainer(
    settings: Settings,
    data: Data,
    trainer: str,
    env: dict[str, str],
    index: str,
    seed: int | None = None,
    warm_start: Path | None = None,
) -> dict:
    paths = trainer_paths(settings, data, trainer, seed)
    if seed is not None and len(settings.seeds) > 1:
        index = f"{index} seed {seed}"
    state = _read_state(paths)
    if is_finished(paths, data):
        step(f"{index} {trainer}: already finished (checkpoint_final, predictions and summary present)")
        return state
    state["device"] = settings.device
    state["threads"] = settings.threads
    if paths.checkpoint_final.is_file():
        step(f"{index} {trainer}: already trained ({paths.checkpoint_final})")
    else:
        step(f"{index} {trainer}: train {settings.budget} on {settings.device}")
        state["train_seconds"], state["train_cpu_seconds"] = train(
            settings, data, trainer, paths, env, seed=seed, warm_start=warm_start
        )
        note(f"trained in {state['train_seconds']:.0f} s (CPU {state['train_cpu_seconds']:.0f} s)")
        _write_state(paths, state)
    if predictions_complete(paths, data):
        note(f"predictions present: {paths.predictions}")
    else:
        step(f"{index} {trainer}: nnUNetv2_predict {len(data.test_cases)} test cases -> {paths.predictions}")
        state["predict_seconds"], state["predict_cpu_seconds"] = predict(settings, data, trainer, paths, env)
        note(f"predicted in {state['predict_seconds']:.0f} s (CPU {state['predict_cpu_seconds']:.0f} s)")
        _write_state(paths, state)
    step(f"{index} {trainer}: evaluate (Dice, HD95, ASSD, NSD@1/2 mm)")
    state["evaluate_seconds"] = evaluate(settings, data, paths)
    _write_state(paths, state)
    return state


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------
def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def ratios_to_stock(comparison, stock: str = STOCK) -> dict[str, dict[str, dict[str, float | None]]]:
    """``ratios[trainer][class][metric]``: trainer's mean over stock's mean (HD95, ASSD); class "mean" is the
    ratio of the foreground means (mean over classes of the per-class means). Empty without ``stock``."""
    if stock not in comparison.methods:
        return {}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for method in comparison.methods:
        per: dict[str, dict[str, float | None]] = {}
        for metric in RATIO_METRICS:
            if metric not in comparison.metrics:
                continue
            means, stock_means = [], []
            for label in comparison.labels:
                mine, ref = (
                    comparison.stats(method, label, metric)[0],
                    comparison.stats(stock, label, metric)[0],
                )
                per.setdefault(str(label), {})[metric] = _finite(mine / ref) if ref else None
                means.append(mine)
                stock_means.append(ref)
            ref = float(np.mean(stock_means))
            per.setdefault("mean", {})[metric] = _finite(float(np.mean(means)) / ref) if ref else None
        out[method] = per
    return out


def results_dict(settings: Settings, data: Data, comparison, manifest: dict, states: dict[str, dict]) -> dict:
    ratios = ratios_to_stock(comparison)
    trainers = {}
    for method in comparison.methods:
        paths = trainer_paths(settings, data, method)
        per_class = {
            str(label): {
                metric: dict(
                    zip(
                        ("mean", "sd"),
                        map(_finite, comparison.stats(method, label, metric)),
                    ),
                    n=int(np.isfinite(comparison.values[method][label][metric]).sum()),
                )
                for metric in comparison.metrics
            }
            for label in comparison.labels
        }
        foreground = {
            metric: _finite(
                float(np.mean([comparison.stats(method, lb, metric)[0] for lb in comparison.labels]))
            )
            for metric in comparison.metrics
        }
        times = epoch_times(paths.model)
        timing = dict(states.get(method, {}))
        if times:
            timing["epochs_logged"] = len(times)
            timing["median_epoch_seconds"] = float(np.median(times[1:] if len(times) > 1 else times))
        curves = training_curves(paths.checkpoint_final) if paths.checkpoint_final.is_file() else {}
        trainers[method] = {
            "model": str(paths.model),
            "predictions": str(paths.predictions),
            "summary": str(paths.summary),
            "per_class": per_class,
            "foreground_mean": foreground,
            "ratio_to_nnUNetTrainer": ratios.get(method),
            "timing": timing,
            "training_curves": curves,
            "per_case": {
                str(label): {
                    m: [_finite(v) for v in comparison.values[method][label][m]] for m in comparison.metrics
                }
                for label in comparison.labels
            },
        }
    return {
        "settings": {k: v for k, v in manifest.items() if k not in ("train_cases", "split")}
        | {
            "n_train_cases": len(data.train_cases),
            "n_train_fold": len(manifest["split"][settings.fold]["train"]),
            "n_val_fold": len(manifest["split"][settings.fold]["val"]),
            "n_test_cases": len(data.test_cases),
            "device": settings.device,
            "threads": settings.threads,
            "tolerances_mm": list(TOLERANCES),
        },
        "labels": {str(k): v for k, v in data.labels.items()},
        "metrics": comparison.metrics,
        "cases": comparison.cases,
        "excluded": comparison.excluded,
        "trainers": trainers,
    }


def _ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio_table(results: dict) -> str:
    labels = results["labels"]
    columns = [(str(k), name) for k, name in labels.items()] + [("mean", "mean")]
    header = ["Trainer"] + [f"{name} {metric}" for _, name in columns for metric in RATIO_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join([":---:"] * (len(header) - 1)) + "|"]
    for trainer, entry in results["trainers"].items():
        ratios = entry["ratio_to_nnUNetTrainer"] or {}
        cells = [
            _ratio_text(ratios.get(key, {}).get(metric)) for key, _ in columns for metric in RATIO_METRICS
        ]
        lines.append("| " + " | ".join([trainer, *cells]) + " |")
    return "\n".join(lines)


def results_markdown(results: dict, table: str) -> str:
    s = results["settings"]
    budget = s["budget"]
    lines = [
        f"# Accuracy benchmark: {s['dataset']}",
        "",
        f"- test cases: {s['n_test_cases']} ({s['test_source']}); training cases: {s['n_train_cases']} "
        f"(fold {s['fold']}: {s['n_train_fold']} train, {s['n_val_fold']} val)",
        f"- plans: {s['plans_identifier']} ({s['configuration']}); budget: {budget['epochs']} epochs x "
        f"{budget['iterations_per_epoch']} iterations (+{budget['val_iterations_per_epoch']} val iterations); "
        f"seed {s['seed']}; device {s['device']}"
        + (f" ({s['threads']} torch threads)" if s.get("threads") else "")
        + ("" if s.get("tta", True) else "; prediction without test-time mirroring"),
        *(
            [
                f"- warm start: every trainer and seed fine-tuned for the budget above from one {s['warm_start']['trainer']} "
                f"pre-training of {s['warm_start']['budget']['epochs']} epochs (seed {s['warm_start']['seed']}), all "
                "weights including the output layers; optimiser and learning-rate schedule start anew"
            ]
            if s.get("warm_start")
            else []
        ),
        "",
        "## Per class: mean ± sd over the test cases",
        "",
        table.rstrip(),
        "",
    ]
    if any(e["ratio_to_nnUNetTrainer"] for e in results["trainers"].values()):
        lines += [
            f"## HD95 and ASSD relative to {STOCK} (trainer's mean / {STOCK}'s mean; < 1 is better)",
            "",
            ratio_table(results),
            "",
            "'mean': ratio of the means over the foreground classes.",
            "",
        ]
    else:
        lines += [f"(no ratios: {STOCK} is not among the trainers)", ""]
    lines += [
        "## Validation pseudo Dice during training",
        "",
        "nnU-Net's own per-epoch pseudo Dice on the fold's validation cases (patches, not the test cases; "
        "mean over the foreground classes): "
        "first epoch at which it reached 0.5, its last value, and the last value of nnU-Net's EMA of it.",
        "",
        "| Trainer | first epoch ≥ 0.5 | last | last EMA |",
        "|---|---:|---:|---:|",
    ]
    for trainer, entry in results["trainers"].items():
        curves = entry.get("training_curves") or {}
        dice, ema = curves.get("mean_fg_dice") or [], curves.get("ema_fg_dice") or []
        reached = first_epoch_reaching(dice, 0.5)
        cells = [
            "never" if reached is None else str(reached),
            f"{dice[-1]:.3f}" if dice else "-",
            f"{ema[-1]:.3f}" if ema else "-",
        ]
        lines.append("| " + " | ".join([trainer, *cells]) + " |")
    lines += [
        "",
        "## Time per trainer (s)",
        "",
        "| Trainer | train | median epoch | predict | evaluate |",
        "|---|---:|---:|---:|---:|",
    ]
    for trainer, entry in results["trainers"].items():
        t = entry["timing"]
        cells = [
            f"{t[k]:.0f}" if isinstance(t.get(k), (int, float)) else "-"
            for k in ("train_seconds", "median_epoch_seconds", "predict_seconds", "evaluate_seconds")
        ]
        if isinstance(t.get("median_epoch_seconds"), float):
            cells[1] = f"{t['median_epoch_seconds']:.1f}"
        lines.append("| " + " | ".join([trainer, *cells]) + " |")
    lines.append("")
    return "\n".join(lines)


PAIRED_METRICS = ("Dice", "HD95", "ASSD", f"NSD@{float(TOLERANCES[0])}mm")


def foreground_means(comparison) -> dict[str, dict[str, float | None]]:
    """``means[trainer][metric]``: the mean over foreground classes of the per-class means over cases."""
    return {
        method: {
            metric: _finite(
                float(np.mean([comparison.stats(method, lb, metric)[0] for lb in comparison.labels]))
            )
            for metric in comparison.metrics
        }
        for method in comparison.methods
    }


def paired_over_seeds(per_seed: dict[int, dict[str, dict[str, float | None]]], stock: str = STOCK) -> dict:
    """Per trainer and metric, paired by seed with ``stock``: HD95/ASSD as ratios (trainer / stock), Dice and
    NSD as differences (trainer - stock); each with its per-seed values, mean and sd (ddof 1) over seeds."""
    out: dict[str, dict] = {}
    seeds = sorted(per_seed)
    trainers = [t for t in next(iter(per_seed.values())) if t != stock]
    for trainer in trainers:
        entry: dict[str, dict] = {}
        for metric in PAIRED_METRICS:
            ratio = metric in RATIO_METRICS
            values = []
            for seed in seeds:
                mine, ref = per_seed[seed][trainer].get(metric), per_seed[seed][stock].get(metric)
                if mine is None or ref is None or (ratio and ref == 0):
                    values.append(None)
                else:
                    values.append(mine / ref if ratio else mine - ref)
            finite = [v for v in values if v is not None]
            entry[metric] = {
                "kind": "ratio" if ratio else "difference",
                "per_seed": dict(zip(map(str, seeds), values)),
                "mean": _finite(float(np.mean(finite))) if finite else None,
                "sd": _finite(float(np.std(finite, ddof=1))) if len(finite) > 1 else None,
            }
        out[trainer] = entry
    return out


def paired_table(per_seed: dict[int, dict[str, dict[str, float | None]]], paired: dict) -> str:
    """Markdown: foreground means per trainer (mean ± sd over seeds), then the paired ratios/differences."""

    def cell(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        sd = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
        return f"{np.mean(values):.3f}{sd}"

    seeds = sorted(per_seed)
    trainers = list(per_seed[seeds[0]])
    lines = [
        "| Trainer | " + " | ".join(f"{m} (fg mean)" for m in PAIRED_METRICS) + " |",
        "|---|" + "|".join([":---:"] * len(PAIRED_METRICS)) + "|",
    ]
    for trainer in trainers:
        cells = [cell([per_seed[s][trainer].get(m) for s in seeds]) for m in PAIRED_METRICS]
        lines.append("| " + " | ".join([trainer, *cells]) + " |")
    lines += [
        "",
        f"Paired by seed with {STOCK}: HD95 and ASSD as ratios (< 1 is better), Dice and NSD as differences "
        "(> 0 is better); mean ± sd over seeds, then the per-seed values.",
        "",
        "| Trainer | "
        + " | ".join(f"{m} {'ratio' if m in RATIO_METRICS else 'diff'}" for m in PAIRED_METRICS)
        + " |",
        "|---|" + "|".join([":---:"] * len(PAIRED_METRICS)) + "|",
    ]
    for trainer, entry in paired.items():
        cells = []
        for metric in PAIRED_METRICS:
            e = entry[metric]
            per = ", ".join("n/a" if v is None else f"{v:.3f}" for v in e["per_seed"].values())
            head = (
                "n/a"
                if e["mean"] is None
                else f"{e['mean']:.3f}" + (f" ± {e['sd']:.3f}" if e["sd"] is not None else "")
            )
            cells.append(f"{head} ({per})")
        lines.append("| " + " | ".join([trainer, *cells]) + " |")
    return "\n".join(lines)


def compare_seed(settings: Settings, data: Data, trainers: list[str], seed: int | None = None):
    from nnunet_sdm.evaluation.compare import compare_folders

    folders = [trainer_paths(settings, data, t, seed).predictions for t in trainers]
    return compare_folders(
        folders,
        data.test_labels,
        list(data.labels),
        TOLERANCES,
        names=trainers,
        num_workers=settings.num_processes,
        dataset_json=settings.out / "test" / "dataset.json",
        file_ending=data.file_ending,
        progress=False,
        log=note,
    )


def compare_and_write(settings: Settings, data: Data, manifest: dict, trainers: list[str]) -> dict:
    from nnunet_sdm.evaluation.compare import markdown_table

    comparison = compare_seed(settings, data, trainers)
    states = {t: _read_state(trainer_paths(settings, data, t)) for t in trainers}
    results = results_dict(settings, data, comparison, manifest, states)
    markdown = results_markdown(results, markdown_table(comparison))
    if len(settings.seeds) > 1:
        per_seed = {settings.seed: foreground_means(comparison)}
        for seed in settings.seeds[1:]:
            per_seed[seed] = foreground_means(compare_seed(settings, data, trainers, seed))
        results["seeds"] = settings.seeds
        results["foreground_mean_per_seed"] = {str(k): v for k, v in per_seed.items()}
        if STOCK in trainers:
            results["paired_over_seeds"] = paired_over_seeds(per_seed)
            table = paired_table(per_seed, results["paired_over_seeds"])
        else:
            table = "(no paired ratios: nnUNetTrainer is not among the finished trainers)"
        markdown += (
            f"\n## All seeds {settings.seeds}: foreground means over the test cases, paired by seed\n\n"
            f"The tables above are seed {settings.seed}'s.\n\n{table}\n"
        )
    (settings.out / "results.json").write_text(json.dumps(results, indent=2))
    (settings.out / "results.md").write_text(markdown)
    note(f"wrote {settings.out / 'results.json'}")
    note(f"wrote {settings.out / 'results.md'}")
    try:
        from nnunet_sdm.plots import comparison_violins

        comparison_violins(comparison, settings.out / "results.png")
        note(f"wrote {settings.out / 'results.png'}")
    except Exception as error:  # a missing plotting backend must not lose the tables
        note(f"no violin plot: {error!r}")
    try:
        from nnunet_sdm.plots import training_curves_plot

        curves = {trainer: entry["training_curves"] for trainer, entry in results["trainers"].items()}
        training_curves_plot(curves, settings.out / "training_curves.png")
        note(f"wrote {settings.out / 'training_curves.png'}")
    except Exception as error:
        note(f"no training-curve plot: {error!r}")
    return results


# ----------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------
def run(settings: Settings) -> int:
    from nnunet_sdm.demo import nnunet_environment

    if settings.warm_start is not None and STOCK not in settings.trainers:
        raise BenchmarkError(f"warm-start mode compares against {STOCK}: add it to --trainers")

    settings.out.mkdir(parents=True, exist_ok=True)
    env = nnunet_environment(settings.out)
    env.setdefault("PYTHONUNBUFFERED", "1")
    print(
        f"accuracy benchmark in {settings.out}: trainers {settings.trainers}, budget {settings.budget}, "
        f"plans {settings.plans_identifier}, fold {settings.fold}, seeds {settings.seeds}, device {settings.device}"
        + (f", warm start {settings.warm_start['budget']}" if settings.warm_start else "")
        + (f" ({settings.threads} torch threads)" if settings.threads else ""),
        flush=True,
    )
    step("1/5 data: training cases -> nnUNet_raw, test cases -> test/")
    data = prepare_data(settings)
    note(f"{data.dataset_name}: {len(data.train_cases)} training cases in {data.raw}")
    note(f"{len(data.test_cases)} test cases ({data.test_source}) in {data.test_images.parent}")
    split = make_split(data.train_cases)
    manifest = make_manifest(settings, data, split)
    check_manifest(settings.out, manifest)

    step("2/5 nnUNetv2_plan_and_preprocess (once) and the plans override")
    preprocessed = plan_and_preprocess(settings, data, env)
    path = write_split(preprocessed, split)
    fold = split[settings.fold]
    note(f"split: {path} (fold {settings.fold}: {len(fold['train'])} train, {len(fold['val'])} val)")

    warm_start = None
    if settings.warm_start is not None:
        step(f"3/5 warm start: one stock pre-training {settings.warm_start['budget']} (seed {settings.seed})")
        warm_start = pretrain(settings, data, env)

    runs = [(seed, trainer) for seed in settings.seeds for trainer in settings.trainers]
    failed: dict[str, str] = {}

    def one(i: int, seed: int, trainer: str) -> None:
        try:
            run_trainer(
                settings,
                data,
                trainer,
                env,
                f"3-4/5 [{i + 1}/{len(runs)}]",
                seed=seed,
                warm_start=warm_start,
            )
        except (RuntimeError, OSError) as error:
            key = trainer if len(settings.seeds) == 1 else f"{trainer} (seed {seed})"
            failed[key] = str(error)
            print(f"\n!!! {key} failed: {error}", file=sys.stderr, flush=True)

    if settings.jobs == 1:
        for i, (seed, trainer) in enumerate(runs):
            one(i, seed, trainer)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(settings.jobs) as pool:
            list(pool.map(lambda item: one(item[0], *item[1]), enumerate(runs)))

    failed_trainers = {key.split(" (seed")[0] for key in failed}
    done = [t for t in settings.trainers if t not in failed_trainers]
    if done:
        step(f"5/5 compare {done}")
        results = compare_and_write(settings, data, manifest, done)
        print()
        print((settings.out / "results.md").read_text())
        if not any(e["ratio_to_nnUNetTrainer"] for e in results["trainers"].values()):
            note(f"{STOCK} is not among the finished trainers: no ratios")
    if failed:
        print(f"failed trainers: {sorted(failed)} (rerun to retry; finished ones are kept)", file=sys.stderr)
        return 1
    print(f"done in {time.time() - _STARTED:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_train_one"]:
        return _train_one(argv[1])
    settings = parse_args(argv)
    try:
        return run(settings)
    except BenchmarkError as error:
        print(f"benchmarks/accuracy.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
