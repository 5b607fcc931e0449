"""Settings of the accuracy benchmark: constants, presets, the command line, and progress output."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
#: the benchmark's command (also the entry of its training subprocesses)
ACCURACY_SCRIPT = BENCHMARKS / "accuracy.py"
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
    "unlabeled_cases",
)


class BenchmarkError(RuntimeError):
    """A problem with the inputs or the output folder; the message says what to do."""


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
    #: inference modes chosen on the fold's validation cases (nnU-Net's post-processing, SDM-guided)
    inference_modes: bool = False
    num_processes: int = 2
    threads: int | None = None
    preset: str | None = None
    #: the goal the results are checked against (a preset's ``goal``, :func:`check_goal`), or None
    goal: dict | None = None
    #: semi-supervised set-up: only this many training cases keep their labels (drawn with nnU-Net's split
    #: seed), the others' images go to ``imagesUnlabeled``; None: every training case is labeled
    labeled_cases: int | None = None

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
        "inference_modes",
        "goal",
        "labeled_cases",
    }
    unknown = set(preset) - known
    if unknown:
        raise BenchmarkError(f"{path}: unknown preset key(s) {sorted(unknown)}; known: {sorted(known)}")
    return preset, path.parent


#: a preset's ``goal``: what the comparison must show (read by ``report.goal_verdict``)
GOAL_KEYS = {
    "trainer": str,  # the trainer judged
    "mode": str,  # its inference mode (benchmarks/accuracy_harness/inference.py MODE_LABELS)
    "against": str,  # the reference trainer
    "against_mode": str,  # the reference's mode
    "hd95_ratio_at_most": float,  # the HD95 ratio's estimate at most this
    "hd95_interval_below": float,  # the HD95 interval's upper end below this
    "dice_difference_at_least": float,  # the Dice difference's estimate at least this
}


def check_goal(goal: object, source: str) -> dict:
    """A preset's ``goal``, checked: every key of :data:`GOAL_KEYS`, nothing else, modes that exist."""
    from .inference import MODE_LABELS

    if not isinstance(goal, dict):
        raise BenchmarkError(f"{source}: 'goal' must be an object with keys {sorted(GOAL_KEYS)}")
    missing, unknown = set(GOAL_KEYS) - set(goal), set(goal) - set(GOAL_KEYS)
    if missing or unknown:
        raise BenchmarkError(
            f"{source}: 'goal' has missing keys {sorted(missing)} / unknown keys {sorted(unknown)}; "
            f"expected {sorted(GOAL_KEYS)}"
        )
    checked = {}
    for key, kind in GOAL_KEYS.items():
        value = goal[key]
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BenchmarkError(f"{source}: goal {key} must be a number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise BenchmarkError(f"{source}: goal {key} must be a string, got {value!r}")
        checked[key] = kind(value)
    for key in ("mode", "against_mode"):
        if checked[key] not in MODE_LABELS:
            raise BenchmarkError(f"{source}: goal {key} {checked[key]!r} is not one of {sorted(MODE_LABELS)}")
    return checked


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
        "--inference-modes",
        action="store_true",
        default=None,
        help="also predict the fold's validation cases and, chosen on them, apply nnU-Net's post-processing "
        "and (trainers with a truncated-SDM head) SDM-guided post-processing to the test predictions; "
        "results with and without, side by side (benchmarks/accuracy_harness/inference.py)",
    )
    parser.add_argument(
        "--labeled-cases",
        type=int,
        dest="labeled_cases",
        help="semi-supervised set-up: keep the labels of this many training cases (drawn with nnU-Net's split "
        "seed); the other training cases become unlabeled images (imagesUnlabeled, nnunet-sdm "
        "preprocess-unlabeled) for trainers that use them",
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
    goal = check_goal(preset["goal"], args.preset) if "goal" in preset else None

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
    labeled_cases = pick("labeled_cases")
    if labeled_cases is not None and int(labeled_cases) < N_FOLDS:
        parser.error(f"--labeled-cases must be >= {N_FOLDS} (nnU-Net's 5-fold split), got {labeled_cases}")

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
        inference_modes=bool(pick("inference_modes", False)),
        num_processes=max(1, args.num_processes),
        threads=_threads(pick("threads"), parser),
        preset=args.preset,
        goal=goal,
        labeled_cases=int(labeled_cases) if labeled_cases is not None else None,
    )


def _threads(value, parser) -> int | None:
    if value is None:
        return None
    if int(value) < 1:
        parser.error(f"--threads must be >= 1, got {value}")
    return int(value)


#: when this process started (progress lines show the seconds since)
STARTED = time.time()


def step(message: str) -> None:
    print(f"\n==> [{time.time() - STARTED:7.0f} s] {message}", flush=True)


def note(message: str) -> None:
    print(f"    {message}", flush=True)
