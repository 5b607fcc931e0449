"""``nnunet-sdm flare package``: a self-contained FLARE submission folder from a trained nnU-Net model::

    OUT/
      model/<Dataset>/<Trainer>__<Plans>__<configuration>/   nnU-Net's model folder, as nnU-Net's export
                                      lays it out: plans.json, dataset.json, dataset_fingerprint.json,
                                      fold_X/<checkpoint> (only the requested folds and checkpoint)
      predict.sh                      sh predict.sh [IN [OUT]]: <case>_0000.nii.gz -> <case>.nii.gz
      Dockerfile                      installs nnU-Net and this package, runs predict.sh
      nnunet_sdm_src/                 this package's source, for the Dockerfile (no network at run time)
      submission.json                 what was packaged (dataset, trainer, plans, folds, labels, versions)
      README.md

``predict.sh``, the ``Dockerfile`` and the ``README.md`` are templates in ``templates/`` (package data, so
shellcheck and readers see them as they are). ``predict.sh`` is POSIX sh (FLARE runs ``sh predict.sh``),
needs only ``nnUNetv2_predict_from_modelfolder`` and ``nnunet-sdm`` (or a ``python3`` that imports
nnunet_sdm) on ``PATH``, sets ``nnUNet_extTrainer`` itself and never touches the network, so it also runs
without the container.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from nnunet_sdm.checks import check_non_negative
from nnunet_sdm.flare.render import render
from nnunet_sdm.inference.sdm_guided import has_truncated_sdm
from nnunet_sdm.workflow import TrainerNotFoundError, trainer_class

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "MODEL_DIR",
    "PREDICT_SH",
    "SOURCE_DIR",
    "SUBMISSION_JSON",
    "SubmissionError",
    "package_submission",
]

# the folder and file names below are also written in the templates (tested)
SUBMISSION_JSON = "submission.json"
PREDICT_SH = "predict.sh"
MODEL_DIR = "model"
SOURCE_DIR = "nnunet_sdm_src"
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime"


class SubmissionError(RuntimeError):
    """A submission that cannot be packaged or run; the message says what is missing."""


def _fold_name(fold: str | int) -> str:
    return "fold_all" if str(fold) == "all" else f"fold_{int(fold)}"


def _normalise_folds(folds: Sequence[str | int]) -> list[str]:
    out = []
    for fold in folds:
        text = str(fold)
        if text != "all" and not text.isdigit():
            raise SubmissionError(f"folds: expected integers or 'all', got {fold!r}")
        if text not in out:
            out.append(text)
    if not out:
        raise SubmissionError("folds: give at least one fold")
    return out


def _check_trainer(trainer: str) -> type:
    """The trainer must be found the way the predictor finds it (nnU-Net's, or ours via nnUNet_extTrainer)."""
    try:
        return trainer_class(trainer)
    except TrainerNotFoundError as e:
        raise SubmissionError(f"{e}; predict.sh could not load it") from None


def _copy_source(target: Path) -> None:
    """This package's source (and its pyproject) for ``pip install`` in the Dockerfile."""
    import nnunet_sdm

    package = Path(nnunet_sdm.__file__).resolve().parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(package, target / "nnunet_sdm", ignore=ignore)
    root = package.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "nnunet-sdm"' in pyproject.read_text():
        shutil.copy2(pyproject, target / "pyproject.toml")
        if (root / "README.md").is_file():
            shutil.copy2(root / "README.md", target / "README.md")
        return
    # an installed (non-editable) package: our build file with the installed version and requirements
    from importlib import metadata

    requires = [r for r in (metadata.requires("nnunet-sdm") or []) if "extra ==" not in r]
    text = render(
        "pyproject.toml.in",
        VERSION=nnunet_sdm.__version__,
        DEPENDENCIES=",\n".join(f"    {json.dumps(r)}" for r in requires),
    )
    (target / "pyproject.toml").write_text(text)


def package_submission(
    dataset: str | int,
    configuration: str,
    trainer: str,
    plans: str,
    folds: Sequence[str | int],
    out: str | Path,
    checkpoint: str = "checkpoint_final.pth",
    base_image: str | None = None,
    sdm_guided_depth_mm: float | None = None,
) -> Path:
    """Write the FLARE submission folder ``out`` (must not exist, or be empty) and return it.

    ``base_image``: the Dockerfile's default base (None: ``DEFAULT_BASE_IMAGE``).
    ``sdm_guided_depth_mm``: predict.sh applies SDM-guided post-processing with this depth
    (``nnunet-sdm predict --sdm-guided-depth``; trainers with truncated SDMs, label datasets); None: off.
    """
    base_image = base_image or DEFAULT_BASE_IMAGE
    import nnunetv2
    import torch
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    import nnunet_sdm

    folds = _normalise_folds(folds)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SubmissionError(f"{out}: exists and is not an empty folder; choose a new output folder")
    dataset_name = maybe_convert_to_dataset_name(dataset)
    model = Path(get_output_folder(dataset_name, trainer, plans, configuration))
    if not model.is_dir():
        raise SubmissionError(
            f"{model}: no trained model (train {trainer} with -p {plans} {configuration} first)"
        )
    for name in ("plans.json", "dataset.json"):
        if not (model / name).is_file():
            raise SubmissionError(f"{model / name}: missing; is this an nnU-Net model folder?")
    missing = [str(model / _fold_name(f) / checkpoint) for f in folds]
    missing = [m for m in missing if not Path(m).is_file()]
    if missing:
        raise SubmissionError(f"checkpoint(s) missing: {missing} (is the training of these folds finished?)")
    trainer_class = _check_trainer(trainer)
    if sdm_guided_depth_mm is not None:
        try:
            sdm_guided_depth_mm = check_non_negative("sdm_guided_depth_mm", sdm_guided_depth_mm)
        except (TypeError, ValueError) as error:
            raise SubmissionError(str(error)) from None
        if not has_truncated_sdm(trainer_class):
            raise SubmissionError(
                f"SDM-guided post-processing: trainer {trainer} predicts no truncated SDM (no truncation_mm); "
                "use a model of nnUNetTrainerSDM or one of its variants, or package without it"
            )

    out.mkdir(parents=True, exist_ok=True)
    model_rel = Path(MODEL_DIR) / dataset_name / model.name
    target = out / model_rel
    target.mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if (model / name).is_file():
            shutil.copy2(model / name, target / name)
    for fold in folds:
        (target / _fold_name(fold)).mkdir()
        shutil.copy2(model / _fold_name(fold) / checkpoint, target / _fold_name(fold) / checkpoint)
    _copy_source(out / SOURCE_DIR)

    dataset_json = json.loads((model / "dataset.json").read_text())
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    info = {
        "dataset": dataset_name,
        "configuration": configuration,
        "trainer": trainer,
        "plans": plans,
        "folds": folds,
        "checkpoint": checkpoint,
        "model": model_rel.as_posix(),
        "file_ending": file_ending,
        "labels": dataset_json["labels"],
        "base_image": base_image,
        "sdm_guided_depth_mm": sdm_guided_depth_mm,
        "versions": {
            "nnunet_sdm": nnunet_sdm.__version__,
            "nnunetv2": getattr(nnunetv2, "__version__", None) or _version("nnunetv2"),
            "torch": torch.__version__,
        },
    }
    (out / SUBMISSION_JSON).write_text(json.dumps(info, indent=2))
    script = out / PREDICT_SH
    script.write_text(
        render(
            PREDICT_SH,
            MODEL=model_rel.as_posix(),
            FOLDS=" ".join(folds),
            CHECKPOINT=checkpoint,
            FILE_ENDING=file_ending,
            SDM_GUIDED_DEPTH="" if sdm_guided_depth_mm is None else f"{sdm_guided_depth_mm:g}",
            MODEL_ROOT=MODEL_DIR,
            DATASET=dataset_name,
            CONFIGURATION=configuration,
            TRAINER=trainer,
            PLANS=plans,
        )
    )
    script.chmod(0o755)
    versions = info["versions"]
    (out / "Dockerfile").write_text(
        render("Dockerfile", BASE_IMAGE=base_image, NNUNET_VERSION=versions["nnunetv2"])
    )
    (out / "README.md").write_text(
        render(
            "README.md",
            TRAINER=trainer,
            DATASET=dataset_name,
            NNUNET_SDM_VERSION=versions["nnunet_sdm"],
            NNUNET_VERSION=versions["nnunetv2"],
            TORCH_VERSION=versions["torch"],
            MODEL=info["model"],
            FOLDS=", ".join(folds),
            CHECKPOINT=checkpoint,
            CONFIGURATION=configuration,
            PLANS=plans,
            LABELS=", ".join(f"{v} = {k}" for k, v in info["labels"].items()),
            FILE_ENDING=file_ending,
            BASE_IMAGE=base_image,
        )
    )
    return out


def _version(distribution: str) -> str:
    from importlib import metadata

    return metadata.version(distribution)
