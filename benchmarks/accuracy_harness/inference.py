"""Inference modes of the benchmark, each chosen on the fold's validation cases, never on the test cases.

Per trainer and seed, after the test predictions (``plain``):

1. **Validation predictions**: the fold's validation cases (``OUT/validation_cases``) predicted with the
   same command and settings as the test cases (mirroring, sliding window; with the SDMs for trainers with a
   truncated-SDM head): what nnU-Net's final validation computes, in a folder of its own.
2. ``pp``: **nnU-Net's own post-processing**. ``nnUNetv2_determine_postprocessing`` on the validation
   predictions (keep the largest foreground component, then per class, each only where it raises the
   validation Dice, nnU-Net's rule), ``nnUNetv2_apply_postprocessing`` with its ``postprocessing.pkl`` on the
   test predictions.
3. ``sdm_guided`` (trainers with a truncated-SDM head): **SDM-guided post-processing**
   (:mod:`nnunet_sdm.inference.sdm_guided`), its depth chosen on the validation predictions among
   :data:`DEPTHS_MM` and "off" by :func:`choose`: the lowest mean foreground HD95 among the settings whose
   mean Dice is at most :data:`DICE_TOLERANCE` below the unfiltered one; "off" unless a depth lowers it.
4. ``sdm_guided_pp``: nnU-Net's post-processing determined on the SDM-guided validation predictions, applied
   to the SDM-guided test predictions (the two in the order a user would run them).
5. ``best``: of the modes above, the one :func:`choose` picks on the validation predictions.

Everything is written under ``<seed folder>/modes/<trainer>/`` (``choice.json`` records what was chosen and
the validation numbers behind it) and evaluated on the test cases like the plain predictions.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from nnunet_sdm.evaluation.compare import load_or_evaluate
from nnunet_sdm.workflow import nnunet_command, run_logged

from .data import Data, sync_links
from .settings import TOLERANCES, Settings, note, step
from .steps import (
    TrainerPaths,
    predict,
    predictions_complete,
    run_environment,
    saves_sdm,
    trainer_paths,
)

#: SDM-guided depths (mm) tried on the validation cases
DEPTHS_MM = (0.0, 1.0, 2.0, 3.0, 5.0)
#: a setting may cost at most this much mean validation Dice (the benchmark's "no cost in Dice")
DICE_TOLERANCE = 0.005
#: the modes, in the order they are built and reported
MODES = ("pp", "sdm_guided", "sdm_guided_pp", "best")
MODE_LABELS = {
    "plain": "",
    "pp": " + nnU-Net pp",
    "sdm_guided": " + SDM-guided",
    "sdm_guided_pp": " + SDM-guided + nnU-Net pp",
    "best": " best (chosen on validation)",
}
CHOICE = "choice.json"
#: where nnUNetv2_determine_postprocessing leaves the post-processed validation predictions
PP_FOLDER = "postprocessed"


def method_name(trainer: str, mode: str) -> str:
    return trainer + MODE_LABELS[mode]


def modes_of(trainer: str) -> list[str]:
    """The modes built for ``trainer`` (SDM-guided ones only for trainers with a truncated-SDM head)."""
    if saves_sdm(trainer):
        return list(MODES)
    return [m for m in MODES if not m.startswith("sdm_guided")]


def mode_folder(paths: TrainerPaths, mode: str) -> Path:
    """Test predictions of ``mode`` (``plain``: the trainer's own test predictions)."""
    return paths.predictions if mode == "plain" else paths.modes / mode


def stage_validation_cases(settings: Settings, data: Data, cases: list[str]) -> tuple[Path, Path]:
    """``OUT/validation_cases/{imagesTr,labelsTr}``: links to the fold's validation cases."""
    root = settings.out / "validation_cases"
    images, labels = root / "imagesTr", root / "labelsTr"
    wanted_images = {
        f.name: f.resolve()
        for case in cases
        for f in sorted((data.raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{data.file_ending}"))
    }
    wanted_labels = {
        f"{c}{data.file_ending}": (data.raw / "labelsTr" / f"{c}{data.file_ending}").resolve() for c in cases
    }
    sync_links(images, wanted_images)
    sync_links(labels, wanted_labels)
    missing = [c for c in cases if not any(n.startswith(f"{c}_") for n in wanted_images)]
    if missing:
        raise RuntimeError(f"{data.raw / 'imagesTr'}: no images of validation case(s) {missing[:5]}")
    return images, labels


def _evaluate(settings: Settings, data: Data, folder: Path, labels: Path) -> dict:
    return load_or_evaluate(
        folder,
        labels,
        list(data.labels),
        TOLERANCES,
        num_workers=settings.num_processes,
        file_ending=data.file_ending,
        progress=False,
        log=lambda _: None,
    )


def _summary_means(summary: dict) -> dict[str, float]:
    return {m: float(summary["foreground_mean"][m]) for m in ("Dice", "HD95")}


def choose(candidates: dict[str, dict[str, float]], reference: str) -> str:
    """The candidate with the lowest mean HD95 among those whose mean Dice is at most :data:`DICE_TOLERANCE`
    below ``reference``'s; ``reference`` unless another one is strictly lower (ties: the first given)."""
    floor = candidates[reference]["Dice"] - DICE_TOLERANCE
    best = reference
    for name, means in candidates.items():
        if means["Dice"] >= floor and means["HD95"] < candidates[best]["HD95"]:
            best = name
    return best


def _nnunet_pp(
    settings: Settings,
    validation: Path,
    validation_labels: Path,
    test_in: Path,
    test_out: Path,
    records: Path,
    env: dict[str, str],
    log: Path,
) -> list[str]:
    """nnU-Net's post-processing: determined on ``validation``, applied to ``test_in`` -> ``test_out``."""
    plans, dataset = records / "plans.json", records / "dataset.json"
    common = ["-plans_json", str(plans), "-dataset_json", str(dataset), "-np", str(settings.num_processes)]
    pkl = validation / "postprocessing.pkl"
    if not pkl.is_file():
        run_logged(
            [
                nnunet_command("nnUNetv2_determine_postprocessing"),
                *("-i", str(validation), "-ref", str(validation_labels)),
                *common,
            ],
            env,
            log.with_name(f"determine_pp_{log.name}"),
            announce=note,
        )
    if test_out.exists():
        shutil.rmtree(test_out)
    run_logged(
        [
            nnunet_command("nnUNetv2_apply_postprocessing"),
            *("-i", str(test_in), "-o", str(test_out), "-pp_pkl_file", str(pkl)),
            *common,
        ],
        env,
        log.with_name(f"apply_pp_{log.name}"),
        announce=note,
    )
    return json.loads((validation / "postprocessing.json").read_text())["postprocessing_fns"]


def _copy_predictions(source: Path, target: Path, file_ending: str) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for f in source.iterdir():
        if (
            f.is_file()
            and (f.name.endswith(file_ending) or f.suffix == ".json")
            and f.name != "sdm_guided.json"
        ):
            shutil.copyfile(f, target / f.name)


def _sdm_guided(folder: Path, out: Path, depth: float | None, file_ending: str) -> None:
    """SDM-guided filtering of ``folder`` into ``out`` (``depth`` None: "off", a copy)."""
    from nnunet_sdm.inference.sdm_guided import apply_to_folder

    if depth is None:
        _copy_predictions(folder, out, file_ending)
        return
    if out.exists():
        shutil.rmtree(out)
    apply_to_folder(folder, out, depth)
    for name in ("plans.json", "dataset.json"):  # what nnU-Net's post-processing reads
        shutil.copyfile(folder / name, out / name)


def run_modes(
    settings: Settings,
    data: Data,
    trainer: str,
    env: dict[str, str],
    index: str,
    validation_cases: list[str],
    seed: int | None = None,
) -> dict:
    """Build, choose and evaluate the inference modes of one trained trainer and seed (resumable: skipped
    when ``choice.json`` is newer than the final checkpoint and every mode is evaluated)."""
    paths = trainer_paths(settings, data, trainer, seed)
    choice_file = paths.modes / CHOICE
    modes = modes_of(trainer)
    if (
        choice_file.is_file()
        and choice_file.stat().st_mtime > paths.checkpoint_final.stat().st_mtime
        and all(predictions_complete(paths, data, folder=mode_folder(paths, m)) for m in modes)
    ):
        for mode in modes:
            _evaluate(settings, data, mode_folder(paths, mode), data.test_labels)
        return json.loads(choice_file.read_text())
    started = time.time()
    run_env = run_environment(env, paths)
    with_sdm = saves_sdm(trainer)
    images, labels = stage_validation_cases(settings, data, validation_cases)
    validation = paths.validation
    if not predictions_complete(paths, data, folder=validation, cases=validation_cases, with_sdm=with_sdm):
        step(f"{index} {trainer}: predict the {len(validation_cases)} validation cases -> {validation}")
        predict(settings, data, trainer, paths, env, images, validation, validation_cases, "predict_val")
    log = settings.out / "logs" / f"{trainer}{paths.log_suffix}.log"
    step(f"{index} {trainer}: inference modes chosen on the validation cases")
    choice: dict = {"validation_cases": len(validation_cases), "dice_tolerance": DICE_TOLERANCE}
    validation_means = {"plain": _summary_means(_evaluate(settings, data, validation, labels))}

    choice["pp"] = _nnunet_pp(
        settings,
        validation,
        labels,
        paths.predictions,
        mode_folder(paths, "pp"),
        paths.predictions,
        run_env,
        log,
    )
    note(f"nnU-Net post-processing chosen on validation: {choice['pp'] or 'none'}")
    validation_means["pp"] = _summary_means(_evaluate(settings, data, validation / PP_FOLDER, labels))

    if with_sdm:
        validation_means.update(
            _sdm_guided_modes(
                settings,
                data,
                trainer,
                paths,
                validation,
                labels,
                validation_means["plain"],
                choice,
                run_env,
                log,
            )
        )
    best = choose(validation_means, "plain")
    choice["best"] = best
    choice["validation_means"] = validation_means
    _copy_predictions(mode_folder(paths, best), mode_folder(paths, "best"), data.file_ending)
    note(f"best mode on validation: {best} ({validation_means[best]})")
    for mode in modes:
        _evaluate(settings, data, mode_folder(paths, mode), data.test_labels)
    choice["seconds"] = time.time() - started
    paths.modes.mkdir(parents=True, exist_ok=True)
    choice_file.write_text(json.dumps(choice, indent=2))
    return choice


def _sdm_guided_modes(
    settings: Settings,
    data: Data,
    trainer: str,
    paths: TrainerPaths,
    validation: Path,
    labels: Path,
    validation_plain: dict[str, float],
    choice: dict,
    run_env: dict[str, str],
    log: Path,
) -> dict[str, dict[str, float]]:
    """The SDM-guided depth chosen on the validation cases (``off`` unless a depth is better), applied to
    the test predictions, and nnU-Net's post-processing chosen on top of it; records both in ``choice`` and
    returns their validation means."""
    depth_folder = paths.modes / "validation_sdm_guided"
    per_depth = {"off": validation_plain}
    for depth in DEPTHS_MM:
        folder = depth_folder / f"depth_{depth:g}mm"
        if not (folder / "sdm_guided.json").is_file():
            _sdm_guided(validation, folder, depth, data.file_ending)
        per_depth[f"{depth:g}"] = _summary_means(_evaluate(settings, data, folder, labels))
    chosen = choose(per_depth, "off")
    depth = None if chosen == "off" else float(chosen)
    choice["sdm_guided"] = {"depth_mm": depth, "validation": per_depth}
    note(f"SDM-guided depth chosen on validation: {chosen} (validation Dice / HD95 per depth: {per_depth})")
    _sdm_guided(paths.predictions, mode_folder(paths, "sdm_guided"), depth, data.file_ending)
    validation_guided = validation if depth is None else depth_folder / f"depth_{depth:g}mm"
    choice["sdm_guided_pp"] = _nnunet_pp(
        settings,
        validation_guided,
        labels,
        mode_folder(paths, "sdm_guided"),
        mode_folder(paths, "sdm_guided_pp"),
        paths.predictions,
        run_env,
        log.with_name(f"{trainer}_sdm_guided{paths.log_suffix}.log"),
    )
    return {
        "sdm_guided": per_depth[chosen],
        "sdm_guided_pp": _summary_means(_evaluate(settings, data, validation_guided / PP_FOLDER, labels)),
    }
