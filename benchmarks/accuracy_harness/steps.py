"""The nnU-Net steps of the benchmark: planning, and per trainer and seed training (a subprocess),
prediction and evaluation, each skipped when its output is already there."""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nnunet_sdm.evaluation import SUMMARY_NAME
from nnunet_sdm.evaluation.compare import load_or_evaluate, summary_matches
from nnunet_sdm.runner import seeded_environment
from nnunet_sdm.sdm_format import sdm_path
from nnunet_sdm.workflow import plan_and_preprocess, predict_command, run_logged

from .data import Data
from .settings import ACCURACY_SCRIPT, CONFIGURATION, STOCK, TOLERANCES, Settings, note, step


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


def plan(settings: Settings, data: Data, env: dict[str, str]) -> Path:
    """Plan and preprocess once (a marker file remembers it), then the plans override."""
    preprocessed = settings.out / "nnUNet_preprocessed" / data.dataset_name
    done = settings.out / "state" / "preprocessed.done"
    planned = done.is_file() and (preprocessed / "nnUNetPlans.json").is_file()
    if planned:
        note(f"already planned and preprocessed: {preprocessed}")
    plan_and_preprocess(
        data.dataset_id,
        env,
        settings.out / "logs",
        override=settings.plans_override,
        plans_name=settings.plans_identifier if settings.plans_override is not None else None,
        configuration=CONFIGURATION,
        num_processes=settings.num_processes,
        plan=not planned,
        announce=note,
    )
    if not planned:
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    plans = json.loads((preprocessed / f"{settings.plans_identifier}.json").read_text())
    config = plans["configurations"][CONFIGURATION]
    if data.unlabeled_cases:
        preprocess_unlabeled_once(settings, data, env, preprocessed, config["data_identifier"])
    arch = config["architecture"]["arch_kwargs"]
    note(
        f"plans {settings.plans_identifier}: patch {config['patch_size']}, batch {config['batch_size']}, "
        f"spacing {config['spacing']}, features {arch.get('features_per_stage')}"
    )
    return preprocessed


def preprocess_unlabeled_once(
    settings: Settings, data: Data, env: dict[str, str], preprocessed: Path, data_identifier: str
) -> None:
    """``nnunet-sdm preprocess-unlabeled`` unless its folder already holds exactly the unlabeled cases."""
    from nnunet_sdm.unlabeled import preprocessed_unlabeled_folder

    folder = preprocessed_unlabeled_folder(preprocessed, data_identifier)
    present = {p.stem for p in folder.glob("*.pkl")} if folder.is_dir() else set()
    if present == set(data.unlabeled_cases):
        note(f"already preprocessed: {len(present)} unlabeled cases in {folder}")
        return
    command = [sys.executable, "-m", "nnunet_sdm.cli", "preprocess-unlabeled", "-d", str(data.dataset_id)]
    command += ["-c", CONFIGURATION, "-p", settings.plans_identifier, "-np", str(settings.num_processes)]
    run_logged(command, env, settings.out / "logs" / "preprocess_unlabeled.log", announce=note)


@dataclass
class TrainerPaths:
    model: Path  # nnU-Net's fold folder
    predictions: Path  # the test predictions
    validation: Path  # the predictions of the fold's validation cases (the inference modes' choice)
    modes: Path  # the inference modes' test predictions and their choice
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
        return self.predictions / SUMMARY_NAME


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
        validation=root / "validation" / trainer,
        modes=root / "modes" / trainer,
        state=root / "state" / f"{trainer}.json",
        results_root=root / "nnUNet_results",
        log_suffix=log_suffix,
    )


def run_environment(env: dict[str, str], paths: TrainerPaths) -> dict[str, str]:
    """``env`` with this run's own ``nnUNet_results`` (seeds and the pre-training never share a folder)."""
    return dict(env, nnUNet_results=str(paths.results_root))


def predictions_complete(
    paths: TrainerPaths,
    data: Data,
    folder: Path | None = None,
    cases: list[str] | None = None,
    with_sdm: bool = False,
) -> bool:
    """Every case (default: the test cases) predicted in ``folder`` (default: the test predictions) after the
    final checkpoint was written, with its SDM image when ``with_sdm``."""
    if not paths.checkpoint_final.is_file():
        return False
    folder = paths.predictions if folder is None else folder
    trained = paths.checkpoint_final.stat().st_mtime
    for case in data.test_cases if cases is None else cases:
        f = folder / f"{case}{data.file_ending}"
        if not f.is_file() or f.stat().st_mtime < trained:
            return False
        if with_sdm and not sdm_path(folder / case, data.file_ending).is_file():
            return False
    return True


@functools.cache
def saves_sdm(trainer: str) -> bool:
    """Whether ``trainer``'s predictions are made with ``nnunet-sdm predict --save-sdm`` (the same label maps
    as ``nnUNetv2_predict``, plus the SDMs): trainers with a truncated-SDM head, which SDM-guided
    post-processing can use. Looked up once per trainer."""
    from nnunet_sdm.inference.sdm_guided import has_truncated_sdm
    from nnunet_sdm.workflow import register_trainers, trainer_class

    register_trainers()  # once, for good: the harness's threads read os.environ while another looks up
    return has_truncated_sdm(trainer_class(trainer))


def summary_up_to_date(paths: TrainerPaths, data: Data) -> bool:
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


def is_finished(paths: TrainerPaths, data: Data, trainer: str) -> bool:
    return predictions_complete(paths, data, with_sdm=saves_sdm(trainer)) and summary_up_to_date(paths, data)


def read_state(paths: TrainerPaths) -> dict:
    return json.loads(paths.state.read_text()) if paths.state.is_file() else {}


def write_state(paths: TrainerPaths, state: dict) -> None:
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
    # Python's string hash seeded too (fixed at start-up only), so that the training repeats bit for bit
    cpu = run_logged(
        [sys.executable, str(ACCURACY_SCRIPT), "_train_one", json.dumps(spec)],
        seeded_environment(run_environment(env, paths), spec["seed"]),
        settings.out / "logs" / f"train_{trainer}{paths.log_suffix}.log",
        echo=EpochSummary(),
        announce=note,
    )
    if not paths.checkpoint_final.is_file():
        raise RuntimeError(f"training {trainer} ended without {paths.checkpoint_final}")
    return time.time() - started, cpu


def train_one(spec_json: str) -> int:
    """Subprocess entry: seed everything, then ``train_with_budget`` (nnU-Net's lifecycle)."""
    spec = json.loads(spec_json)
    import torch

    from nnunet_sdm.runner import Budget, train_with_budget

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
        seed=int(spec["seed"]),
    )
    print(f"trained: {folder}", flush=True)
    return 0


def predict(
    settings: Settings,
    data: Data,
    trainer: str,
    paths: TrainerPaths,
    env: dict[str, str],
    images: Path | None = None,
    out: Path | None = None,
    cases: list[str] | None = None,
    log_name: str = "predict",
) -> tuple[float, float]:
    """Predict ``images`` (default: the test images) into ``out`` (default: the test predictions); trainers
    with a truncated-SDM head with ``nnunet-sdm predict --save-sdm`` (:func:`saves_sdm`)."""
    images = data.test_images if images is None else images
    out = paths.predictions if out is None else out
    cases = data.test_cases if cases is None else cases
    if out.is_dir():
        trained = paths.checkpoint_final.stat().st_mtime
        stale = [p for p in out.iterdir() if p.is_file() and p.stat().st_mtime < trained]
        for p in stale:  # predictions of an older model
            p.unlink()
    command = predict_command(
        images,
        out,
        data.dataset_id,
        trainer,
        settings.plans_identifier,
        folds=(settings.fold,),
        device=settings.device,
        configuration=CONFIGURATION,
        tta=settings.tta,
        continue_prediction=True,
        save_sdm=saves_sdm(trainer),
    )
    started = time.time()
    cpu = run_logged(
        command,
        run_environment(env, paths),
        settings.out / "logs" / f"{log_name}_{trainer}{paths.log_suffix}.log",
        announce=note,
    )
    missing = [c for c in cases if not (out / f"{c}{data.file_ending}").is_file()]
    if missing:
        raise RuntimeError(f"predicting with {trainer} wrote no prediction for {missing[:5]} in {out}")
    return time.time() - started, cpu


def evaluate(settings: Settings, data: Data, paths: TrainerPaths) -> float:
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
    state = read_state(paths)
    state["train_seconds"], state["train_cpu_seconds"] = train(
        settings, data, spec["trainer"], paths, env, seed=spec["seed"], budget=spec["budget"]
    )
    write_state(paths, state)
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
    state = read_state(paths)
    if is_finished(paths, data, trainer):
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
        write_state(paths, state)
    if predictions_complete(paths, data, with_sdm=saves_sdm(trainer)):
        note(f"predictions present: {paths.predictions}")
    else:
        step(f"{index} {trainer}: nnUNetv2_predict {len(data.test_cases)} test cases -> {paths.predictions}")
        state["predict_seconds"], state["predict_cpu_seconds"] = predict(settings, data, trainer, paths, env)
        note(f"predicted in {state['predict_seconds']:.0f} s (CPU {state['predict_cpu_seconds']:.0f} s)")
        write_state(paths, state)
    step(f"{index} {trainer}: evaluate (Dice, HD95, ASSD, NSD@1/2 mm)")
    state["evaluate_seconds"] = evaluate(settings, data, paths)
    write_state(paths, state)
    return state
