"""nnU-Net's workflow from Python, written once: environment, commands, logged runs, planning, prediction.

The demo, the benchmarks, the tests, ``nnunet-sdm predict`` and the FLARE tools all drive nnU-Net through
this module:

- :func:`nnunet_environment`: ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` under one work
  folder, our trainers on ``nnUNet_extTrainer``, CPU-friendly defaults;
- :func:`register_trainers` / :func:`trainers_registered`: our trainer folder on ``nnUNet_extTrainer`` of
  this process (kept, or only for a ``with`` block), so nnU-Net's class lookup finds them;
- :func:`nnunet_command`: an nnU-Net console script, the one beside this interpreter first;
- :func:`run_logged` (output to a log file, optional progress lines) and :func:`run_captured` (output
  kept in memory); both raise :class:`CommandError` with the output's tail;
- :func:`plan_and_preprocess`: ``nnUNetv2_plan_and_preprocess``, then an optional plans override
  (``nnunet-sdm plans apply``) and, when the override changes the spacing, ``nnUNetv2_preprocess``;
- :func:`predict_command`: the ``nnUNetv2_predict`` command line (or ours, ``nnunet-sdm predict``, for SDMs).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nnunet_sdm import trainers_path

__all__ = [
    "CommandError",
    "nnunet_command",
    "nnunet_environment",
    "plan_and_preprocess",
    "predict_command",
    "register_trainers",
    "run_captured",
    "run_logged",
    "trainers_registered",
]

EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"
#: lines of a failed command's output quoted in its error
TAIL_LINES = 30


class CommandError(RuntimeError):
    """A command exited non-zero; the message quotes the end of its output."""

    def __init__(self, command: Sequence[str], returncode: int, tail: str, where: str = "") -> None:
        self.command, self.returncode = list(command), returncode
        super().__init__(f"{' '.join(command)} failed ({returncode}){where}:\n{tail}")


# ---- environment and trainer registration -----------------------------------------------------------
def with_our_trainers(ext_trainer: str | None) -> str:
    """An ``nnUNet_extTrainer`` value that also holds our trainer folder (appended, once)."""
    ours = trainers_path()
    if not ext_trainer:
        return ours
    return ext_trainer if ours in ext_trainer.split(os.pathsep) else ext_trainer + os.pathsep + ours


def nnunet_environment(workdir: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with nnU-Net's three folders under ``workdir``, our
    trainers on ``nnUNet_extTrainer`` and, unless set, ``nnUNet_compile=f`` and two worker processes."""
    workdir = Path(workdir)
    env = dict(os.environ if base is None else base)
    env.update(
        nnUNet_raw=str(workdir / "nnUNet_raw"),
        nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
        nnUNet_results=str(workdir / "nnUNet_results"),
        nnUNet_extTrainer=with_our_trainers(env.get(EXT_TRAINER_VARIABLE)),
    )
    for name, default in (("nnUNet_compile", "f"), ("nnUNet_n_proc_DA", "2"), ("nnUNet_def_n_proc", "2")):
        env.setdefault(name, default)
    return env


def register_trainers() -> None:
    """Put our trainer folder on this process's ``nnUNet_extTrainer`` (kept), so that nnU-Net's lookup
    by class name (training, the predictor) finds our trainers beside the user's own."""
    os.environ[EXT_TRAINER_VARIABLE] = with_our_trainers(os.environ.get(EXT_TRAINER_VARIABLE))


@contextmanager
def trainers_registered() -> Iterator[None]:
    """:func:`register_trainers` for the ``with`` block only; the variable is restored afterwards."""
    old = os.environ.get(EXT_TRAINER_VARIABLE)
    if old is not None and with_our_trainers(old) == old:
        yield  # already registered: leave os.environ alone (other threads may be reading it)
        return
    register_trainers()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(EXT_TRAINER_VARIABLE, None)
        else:
            os.environ[EXT_TRAINER_VARIABLE] = old


class TrainerNotFoundError(RuntimeError):
    """A trainer name that neither nnU-Net nor nnunet-sdm (nor ``nnUNet_extTrainer``) defines."""


def trainer_class(name: str) -> type:
    """The trainer class called ``name``, found as ``nnUNetv2_train`` and the predictor find it: nnU-Net's
    own trainers, then ``nnUNet_extTrainer`` with this project's trainers added. The one lookup of the
    predictor, the FLARE packaging and the benchmarks."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with trainers_registered():
        try:
            return recursive_find_trainer_class_by_name(name)
        except RuntimeError as error:
            raise TrainerNotFoundError(
                f"trainer {name!r} is neither nnU-Net's nor nnunet-sdm's (nor in nnUNet_extTrainer): {error}"
            ) from None


def nnunet_command(name: str) -> str:
    """Path of an nnU-Net console script, preferring the one beside this interpreter."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: is nnunetv2 installed in this environment?")
    return found


# ---- running commands -------------------------------------------------------------------------------
def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(
    command: Sequence[str],
    env: dict[str, str],
    log: str | Path,
    echo: Callable[[str], str | None] | None = None,
    announce: Callable[[str], None] = print,
    cwd: str | Path | None = None,
) -> float:
    """Run ``command`` with its output (stdout and stderr) in ``log``; return its CPU seconds.

    ``announce`` is told the command and the log; ``echo(line)`` sees every output line and may return a
    progress line to print. The CPU seconds are user + sys of the command and the processes it waited for.
    Raises :class:`CommandError` with the log's last lines if the command fails.
    """
    log = Path(log)
    cpu = _children_cpu_seconds()
    announce("$ " + " ".join(command))
    announce(f"log: {log}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        for line in process.stdout:
            handle.write(line)
            progress = echo(line) if echo is not None else None
            if progress:
                print("      " + progress, flush=True)
        returncode = process.wait()
    if returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-TAIL_LINES:])
        raise CommandError(command, returncode, tail, f", see {log}")
    return _children_cpu_seconds() - cpu


def run_captured(
    command: Sequence[str], env: dict[str, str], cwd: str | Path | None = None
) -> subprocess.CompletedProcess:
    """Run ``command`` with its stdout and stderr kept (text); :class:`CommandError` quoting both if it fails."""
    result = subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        raise CommandError(command, result.returncode, tail)
    return result


# ---- planning and prediction --------------------------------------------------------------------------
def plan_and_preprocess(
    dataset_id: int | str,
    env: dict[str, str],
    log_dir: str | Path,
    override: str | Path | None = None,
    plans_name: str | None = None,
    configuration: str = "3d_fullres",
    num_processes: int = 2,
    verify: bool = True,
    plan: bool = True,
    announce: Callable[[str], None] = print,
) -> Path:
    """Plan and preprocess a raw dataset of ``env``'s ``nnUNet_raw``; return its preprocessed folder.

    ``override`` (a file, or a bundled override's name such as ``cpu_small``) then writes plans
    ``plans_name`` (default ``nnUNetPlans_<override>``) and, if they change the configuration's
    spacing, preprocesses the data for them. ``plan=False`` skips nnU-Net's planning (already done).
    """
    from nnunet_sdm.plans import bundled_override, needs_preprocessing, write_plans

    log_dir = Path(log_dir)
    if plan:
        command = [nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration]
        command += ["-np", str(num_processes), *(["--verify_dataset_integrity"] if verify else [])]
        run_logged(command, env, log_dir / "plan_and_preprocess.log", announce=announce)
    raw_name = _dataset_name(dataset_id, env)
    preprocessed = Path(env["nnUNet_preprocessed"]) / raw_name
    if override is None:
        return preprocessed
    override_file = Path(override) if Path(override).is_file() else bundled_override(str(override))
    plans_name = plans_name or f"nnUNetPlans_{override_file.stem}"
    plans_file = preprocessed / f"{plans_name}.json"
    previous = plans_file.read_text() if plans_file.is_file() else None
    write_plans(preprocessed, override_file, plans_name, configuration)
    changed = previous is None or plans_file.read_text() != previous
    announce(f"{'wrote' if changed else 'unchanged:'} plans {plans_file} from {override_file}")
    if needs_preprocessing(preprocessed, plans_name, configuration):
        command = [nnunet_command("nnUNetv2_preprocess"), "-d", str(dataset_id), "-c", configuration]
        command += ["-plans_name", plans_name, "-np", str(num_processes)]
        run_logged(command, env, log_dir / f"preprocess_{plans_name}.log", announce=announce)
    return preprocessed


def _dataset_name(dataset_id: int | str, env: dict[str, str]) -> str:
    """nnU-Net's ``DatasetXXX_Name`` of ``dataset_id``, found in ``env``'s folders (not this process's)."""
    text = str(dataset_id)
    if text.startswith("Dataset"):
        return text
    prefix = f"Dataset{int(text):03d}_"
    for key in ("nnUNet_preprocessed", "nnUNet_raw"):
        folder = Path(env.get(key, ""))
        matches = sorted(p.name for p in folder.glob(prefix + "*")) if folder.is_dir() else []
        if matches:
            return matches[0]
    raise FileNotFoundError(
        f"no {prefix}* dataset in {env.get('nnUNet_preprocessed')} or {env.get('nnUNet_raw')}"
    )


def predict_command(
    images: str | Path,
    out: str | Path,
    dataset: int | str,
    trainer: str,
    plans: str = "nnUNetPlans",
    folds: Sequence[int | str] = (0,),
    device: str = "cpu",
    configuration: str = "3d_fullres",
    tta: bool = True,
    continue_prediction: bool = False,
    extra: Sequence[str] = (),
    save_sdm: bool = False,
    sdm_guided_depth_mm: float | None = None,
) -> list[str]:
    """``nnUNetv2_predict`` of the images in ``images`` into ``out``, one preprocessing and one export
    worker (least memory; what a CPU run wants). With ``save_sdm`` or ``sdm_guided_depth_mm``, our
    ``nnunet-sdm predict`` (the same predictor and label maps) with ``--save-sdm`` / ``--sdm-guided-depth``."""
    ours = save_sdm or sdm_guided_depth_mm is not None
    program = (
        [sys.executable, "-m", "nnunet_sdm.cli", "predict"] if ours else [nnunet_command("nnUNetv2_predict")]
    )
    return [
        *program,
        *("-i", str(images), "-o", str(out), "-d", str(dataset), "-c", configuration),
        *("-tr", trainer, "-p", plans, "-f", *map(str, folds), "-device", device, "-npp", "1", "-nps", "1"),
        *(["--continue_prediction"] if continue_prediction else []),
        *([] if tta else ["--disable_tta"]),
        *(["--save-sdm"] if save_sdm else []),
        *([] if sdm_guided_depth_mm is None else ["--sdm-guided-depth", str(sdm_guided_depth_mm)]),
        *extra,
    ]
