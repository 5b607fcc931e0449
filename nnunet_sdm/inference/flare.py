"""FLARE challenge submissions: package a trained nnU-Net model, run it case by case, measure it.

``package_submission`` (``nnunet-sdm flare package``) writes a self-contained folder::

    OUT/
      model/<Dataset>/<Trainer>__<Plans>__<configuration>/   nnU-Net's model folder, as nnU-Net's export
                                      lays it out: plans.json, dataset.json, dataset_fingerprint.json,
                                      fold_X/<checkpoint> (only the requested folds and checkpoint)
      predict.sh                      sh predict.sh [IN [OUT]]: <case>_0000.nii.gz -> <case>.nii.gz
      Dockerfile                      installs nnU-Net and this package, runs predict.sh
      nnunet_sdm_src/                 this package's source, for the Dockerfile (no network at run time)
      submission.json                 what was packaged (dataset, trainer, plans, folds, labels, versions)
      README.md

``predict.sh`` is POSIX sh (FLARE runs ``sh predict.sh``), needs only ``nnUNetv2_predict_from_modelfolder``
and ``nnunet-sdm`` (or a ``python3`` that imports nnunet_sdm) on ``PATH``, sets ``nnUNet_extTrainer``
itself and never touches the network, so it also runs without the container.

``run_submission`` (``nnunet-sdm flare run``) runs ``predict.sh`` once per case, through a temporary
input folder holding only that case, and writes a CSV with, per case:

- ``seconds``: wall time of ``predict.sh`` for the case, including start-up and model loading (as a
  container run per case would be timed);
- ``peak_rss_mb``: the peak resident memory of the largest process ``predict.sh`` started (nnU-Net's
  main process, or one of its preprocessing/export workers if larger): ``getrusage(RUSAGE_CHILDREN)
  .ru_maxrss`` read in a fresh wrapper process per case, so it is the case's own peak, not a running
  maximum; not the sum over processes;
- ``peak_gpu_mb``: ``torch.cuda.max_memory_allocated()`` at exit of every process that initialised
  CUDA (the largest is reported; empty when CUDA was not used). It is read by a ``sitecustomize``
  hook put on the child's ``PYTHONPATH``; it counts tensors allocated by PyTorch, not the CUDA context
  or the caching allocator's reserve (``nvidia-smi`` shows more);
- with ``--gt``: ``DSC_<label>`` and ``NSD_<label>`` (FLARE21: NSD at 1 mm) from
  :func:`nnunet_sdm.evaluation.evaluate_case`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

SUBMISSION_JSON = "submission.json"
PREDICT_SH = "predict.sh"
MODEL_DIR = "model"
SOURCE_DIR = "nnunet_sdm_src"
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime"
FLARE_NSD_TOLERANCE_MM = 1.0


class SubmissionError(RuntimeError):
    """A submission that cannot be packaged or run; the message says what is missing."""


# ---- package -------------------------------------------------------------------------------------
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


def _check_trainer(trainer: str) -> None:
    """The trainer must be found the way the predictor finds it (nnU-Net's, or ours via nnUNet_extTrainer)."""
    from nnunet_sdm import trainers_path

    old = os.environ.get("nnUNet_extTrainer")
    os.environ["nnUNet_extTrainer"] = trainers_path()
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        recursive_find_trainer_class_by_name(trainer)
    except RuntimeError as e:
        raise SubmissionError(
            f"trainer {trainer!r} is neither nnU-Net's nor nnunet-sdm's; predict.sh could not load it ({e})"
        ) from None
    finally:
        if old is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = old


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
    # an installed (non-editable) package: a minimal pyproject with the installed requirements
    from importlib import metadata

    requires = [r for r in (metadata.requires("nnunet-sdm") or []) if "extra ==" not in r]
    deps = ",\n".join(f"    {json.dumps(r)}" for r in requires)
    (target / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=68", "wheel"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "nnunet-sdm"
            version = "{nnunet_sdm.__version__}"
            requires-python = ">=3.10"
            dependencies = [
            {deps}
            ]

            [project.scripts]
            nnunet-sdm = "nnunet_sdm.cli:main"

            [tool.setuptools.packages.find]
            include = ["nnunet_sdm*"]

            [tool.setuptools.package-data]
            nnunet_sdm = ["plans_overrides/*.json", "plans_overrides/*.md"]
            """
        )
    )


def _predict_sh(model_rel: str, folds: list[str], checkpoint: str, file_ending: str) -> str:
    return textwrap.dedent(
        f"""\
        #!/bin/sh
        # FLARE submission (nnunet-sdm flare package): segment every <case>_0000{file_ending} in INPUT into
        # OUTPUT/<case>{file_ending}.
        #   sh predict.sh [INPUT [OUTPUT]]      (defaults: /workspace/inputs /workspace/outputs)
        # Needs nnUNetv2_predict_from_modelfolder (nnunetv2) and nnunet-sdm on PATH (or a python3 that imports
        # nnunet_sdm); no network access. Environment (all optional):
        #   DEVICE  cuda | cpu | mps (default: cuda if nvidia-smi lists a GPU, else cpu)
        #   TTA     1 (default: mirroring, as nnU-Net) or 0 (faster, no mirroring)
        #   NPP NPS nnU-Net's preprocessing / export processes (default 1 each, least memory)
        set -eu
        HERE=$(cd "$(dirname "$0")" && pwd)
        INPUT=${{1:-/workspace/inputs}}
        OUTPUT=${{2:-/workspace/outputs}}
        MODEL="$HERE/{model_rel}"
        FOLDS="{" ".join(folds)}"
        CHECKPOINT="{checkpoint}"
        FILE_ENDING="{file_ending}"

        if ! command -v nnUNetv2_predict_from_modelfolder >/dev/null 2>&1; then
            echo "predict.sh: nnUNetv2_predict_from_modelfolder not on PATH; install nnunetv2 (see README.md)" >&2
            exit 1
        fi
        # nnU-Net finds our trainer classes through nnUNet_extTrainer (one-line shims in the package)
        if command -v nnunet-sdm >/dev/null 2>&1; then
            nnUNet_extTrainer=$(nnunet-sdm trainers-path)
        else
            nnUNet_extTrainer=$(python3 -c 'import nnunet_sdm; print(nnunet_sdm.trainers_path())')
        fi
        export nnUNet_extTrainer
        # not used by prediction from a model folder; set so that nnU-Net does not warn
        export nnUNet_raw="${{nnUNet_raw:-$HERE/{MODEL_DIR}}}"
        export nnUNet_preprocessed="${{nnUNet_preprocessed:-$HERE/{MODEL_DIR}}}"
        export nnUNet_results="${{nnUNet_results:-$HERE/{MODEL_DIR}}}"

        if [ -z "${{DEVICE:-}}" ]; then
            if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
                DEVICE=cuda
            else
                DEVICE=cpu
            fi
        fi
        TTA_FLAG=""
        if [ "${{TTA:-1}}" = "0" ]; then
            TTA_FLAG="--disable_tta"
        fi

        # predict into a scratch folder, then move only the segmentations (nnU-Net also writes its json files)
        mkdir -p "$OUTPUT"
        SCRATCH=$(mktemp -d)
        trap 'rm -rf "$SCRATCH"' EXIT
        # shellcheck disable=SC2086
        nnUNetv2_predict_from_modelfolder -i "$INPUT" -o "$SCRATCH" -m "$MODEL" -f $FOLDS -chk "$CHECKPOINT" \\
            -device "$DEVICE" -npp "${{NPP:-1}}" -nps "${{NPS:-1}}" --disable_progress_bar $TTA_FLAG
        for f in "$SCRATCH"/*"$FILE_ENDING"; do
            [ -e "$f" ] || continue
            mv "$f" "$OUTPUT/"
        done
        """
    )


def _dockerfile(base_image: str, nnunet_version: str) -> str:
    return textwrap.dedent(
        f"""\
        # FLARE submission image (nnunet-sdm flare package). Build and run:
        #   docker build -t TEAM .
        #   docker run --gpus all --shm-size=4g --rm -v IN:/workspace/inputs -v OUT:/workspace/outputs TEAM
        # (nnU-Net passes arrays between its worker processes through shared memory: Docker's default 64 MB
        # /dev/shm is too small for CT volumes)
        # Building needs network access (pip); running it does not.
        ARG BASE_IMAGE={base_image}
        FROM ${{BASE_IMAGE}}
        ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 nnUNet_compile=f
        WORKDIR /workspace
        COPY {SOURCE_DIR} /opt/{SOURCE_DIR}
        RUN pip install "nnunetv2=={nnunet_version}" /opt/{SOURCE_DIR}
        COPY {MODEL_DIR} /workspace/{MODEL_DIR}
        COPY {PREDICT_SH} {SUBMISSION_JSON} /workspace/
        CMD ["sh", "/workspace/{PREDICT_SH}", "/workspace/inputs", "/workspace/outputs"]
        """
    )


def _readme(info: dict) -> str:
    labels = ", ".join(f"{v} = {k}" for k, v in info["labels"].items())
    return textwrap.dedent(
        f"""\
        # FLARE submission: {info["trainer"]} on {info["dataset"]}

        Made by `nnunet-sdm flare package` (nnunet-sdm {info["versions"]["nnunet_sdm"]}, nnU-Net
        {info["versions"]["nnunetv2"]}, trained with torch {info["versions"]["torch"]}).

        - model: `{info["model"]}` (nnU-Net's model folder; folds {", ".join(info["folds"])},
          `{info["checkpoint"]}`), configuration `{info["configuration"]}`, plans `{info["plans"]}`
        - labels: {labels}
        - input: `<case>_0000{info["file_ending"]}` (one file per channel, `_0001`, ... if more);
          output: `<case>{info["file_ending"]}` (FLARE naming), label maps on the input's grid

        ## Run without the container

        With nnU-Net and nnunet-sdm installed (`pip install "nnunetv2=={info["versions"]["nnunetv2"]}"
        ./{SOURCE_DIR}`), from any directory:

        ```bash
        sh predict.sh INPUT_DIR OUTPUT_DIR          # DEVICE=cpu|cuda, TTA=0, NPP/NPS optional
        ```

        `predict.sh` sets `nnUNet_extTrainer` itself and calls `nnUNetv2_predict_from_modelfolder`; it
        uses no network.

        ## Run in Docker

        ```bash
        docker build -t team .
        docker run --gpus all --shm-size=4g --rm \\
            -v $PWD/inputs:/workspace/inputs -v $PWD/outputs:/workspace/outputs team
        ```

        `--shm-size`: nnU-Net passes arrays between its worker processes through shared memory, and
        Docker's default 64 MB `/dev/shm` is too small for CT volumes.

        The image installs nnU-Net {info["versions"]["nnunetv2"]} and `{SOURCE_DIR}/` on top of
        `{info["base_image"]}` (change with `--build-arg BASE_IMAGE=...`) and runs
        `sh /workspace/predict.sh /workspace/inputs /workspace/outputs`.

        ## Time and memory per case

        ```bash
        nnunet-sdm flare run . INPUT_DIR OUTPUT_DIR [--gt LABELS_DIR]
        ```

        runs `predict.sh` once per case and writes `OUTPUT_DIR/flare_run.csv`: seconds (including
        start-up and model loading), peak RSS of the largest child process, peak GPU memory allocated by
        PyTorch (CUDA only), and with `--gt` DSC and NSD (1 mm) per class.
        """
    )


def package_submission(
    dataset: str | int,
    configuration: str,
    trainer: str,
    plans: str,
    folds: Sequence[str | int],
    out: str | Path,
    checkpoint: str = "checkpoint_final.pth",
    base_image: str | None = None,
) -> Path:
    """Write the FLARE submission folder ``out`` (must not exist, or be empty) and return it.

    ``base_image``: the Dockerfile's default base (None: ``DEFAULT_BASE_IMAGE``).
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
    _check_trainer(trainer)

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
        "versions": {
            "nnunet_sdm": nnunet_sdm.__version__,
            "nnunetv2": getattr(nnunetv2, "__version__", None) or _version("nnunetv2"),
            "torch": torch.__version__,
        },
    }
    (out / SUBMISSION_JSON).write_text(json.dumps(info, indent=2))
    script = out / PREDICT_SH
    script.write_text(_predict_sh(model_rel.as_posix(), folds, checkpoint, file_ending))
    script.chmod(0o755)
    (out / "Dockerfile").write_text(_dockerfile(base_image, info["versions"]["nnunetv2"]))
    (out / "README.md").write_text(_readme(info))
    return out


def _version(distribution: str) -> str:
    from importlib import metadata

    return metadata.version(distribution)


# ---- run -----------------------------------------------------------------------------------------
# Runs the command given after the output path, then writes its wall time and the peak RSS of its
# process tree (RUSAGE_CHILDREN of this fresh process: the largest descendant that was waited for).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
rss_bytes = rss if sys.platform == "darwin" else rss * 1024
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": code, "seconds": seconds, "peak_rss_bytes": rss_bytes}, f)
sys.exit(code)
"""

# sitecustomize for the child processes: at exit, the CUDA peak of every process that used CUDA.
_GPU_HOOK = '''
"""nnunet-sdm flare run: record torch.cuda.max_memory_allocated() at exit (then the real sitecustomize)."""
import atexit as _atexit
import os as _os
import sys as _sys


def _nnunet_sdm_cuda_peak():
    torch = _sys.modules.get("torch")
    folder = _os.environ.get("NNUNET_SDM_GPU_PEAK_DIR")
    if torch is None or not folder:
        return
    try:
        if not torch.cuda.is_initialized():
            return
        peak = max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
        with open(_os.path.join(folder, "%d.peak" % _os.getpid()), "w") as f:
            f.write(str(int(peak)))
    except Exception:
        pass


_atexit.register(_nnunet_sdm_cuda_peak)
# hand over to a sitecustomize further down the path, if there is one
_here = _os.path.dirname(_os.path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
_me = _sys.modules.pop("sitecustomize")
try:
    import sitecustomize  # noqa: F401
except ImportError:
    pass
finally:
    _sys.modules.setdefault("sitecustomize", _me)
'''


def find_cases(input_dir: str | Path, file_ending: str = ".nii.gz") -> dict[str, list[Path]]:
    """Case id -> its channel files (``<case>_0000<ending>``, ``<case>_0001<ending>``, ...), sorted."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise SubmissionError(f"{input_dir}: no such input folder")
    cases: dict[str, list[Path]] = {}
    suffix = "_0000" + file_ending
    for path in sorted(input_dir.iterdir()):
        if path.name.endswith(suffix):
            cases[path.name[: -len(suffix)]] = []
    for path in sorted(input_dir.iterdir()):
        name = path.name
        if not name.endswith(file_ending) or len(name) < len(suffix):
            continue
        stem = name[: -len(file_ending)]
        case, channel = stem[:-5], stem[-5:]
        if case in cases and channel[0] == "_" and channel[1:].isdigit():
            cases[case].append(path)
    if not cases:
        raise SubmissionError(f"{input_dir}: no <case>_0000{file_ending} files")
    return cases


def _label_columns(labels: dict) -> dict[int, str]:
    """Foreground label value -> column suffix (the label's name from dataset.json)."""
    columns = {}
    for name, value in labels.items():
        if name == "ignore" or isinstance(value, (list, tuple)) or int(value) == 0:
            continue
        columns[int(value)] = str(name).replace(" ", "_")
    return columns


def run_submission(
    submission: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    gt_dir: str | Path | None = None,
    csv_path: str | Path | None = None,
    device: str | None = None,
    tolerance_mm: float = FLARE_NSD_TOLERANCE_MM,
    env: dict[str, str] | None = None,
) -> tuple[Path, list[dict]]:
    """Run ``predict.sh`` of ``submission`` on every case of ``input_dir``, one case at a time.

    Predictions land in ``output_dir``; the per-case CSV (default ``output_dir/flare_run.csv``) and
    the children's output (``<csv>.log``) beside it. ``device`` sets predict.sh's ``DEVICE``; ``env``
    is the environment for predict.sh (default: this process's). Returns the CSV path and the rows.
    """
    submission, output_dir = Path(submission).resolve(), Path(output_dir).resolve()
    script = submission / PREDICT_SH
    if not script.is_file():
        raise SubmissionError(
            f"{script}: missing; is {submission} a folder made by `nnunet-sdm flare package`?"
        )
    info_file = submission / SUBMISSION_JSON
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    file_ending = info.get("file_ending", ".nii.gz")
    cases = find_cases(input_dir, file_ending)
    columns: dict[int, str] = {}
    if gt_dir is not None:
        gt_dir = Path(gt_dir)
        if "labels" not in info:
            raise SubmissionError(f"{info_file}: no labels; cannot evaluate against {gt_dir}")
        columns = _label_columns(info["labels"])
        missing = [c for c in cases if not (gt_dir / f"{c}{file_ending}").is_file()]
        if missing:
            raise SubmissionError(f"{gt_dir}: no reference for case(s) {missing}")
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = Path(csv_path) if csv_path else output_dir / "flare_run.csv"
    log_path = csv_path.with_suffix(".log")
    base_env = dict(os.environ if env is None else env)
    if device:
        base_env["DEVICE"] = device

    rows = []
    with tempfile.TemporaryDirectory(prefix="nnunet_sdm_flare_") as tmp, open(log_path, "w") as log:
        tmp = Path(tmp)
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(_GPU_HOOK)
        for case, files in cases.items():
            case_in, peaks = tmp / "in" / case, tmp / "gpu" / case
            case_in.mkdir(parents=True)
            peaks.mkdir(parents=True)
            for f in files:
                try:
                    (case_in / f.name).symlink_to(f.resolve())
                except OSError:
                    shutil.copy2(f, case_in / f.name)
            child_env = dict(base_env)
            child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), base_env.get("PYTHONPATH")]))
            child_env["NNUNET_SDM_GPU_PEAK_DIR"] = str(peaks)
            measure = tmp / f"{case}.json"
            log.write(f"==> {case}\n")
            log.flush()
            command = [
                sys.executable,
                "-c",
                _MEASURE,
                str(measure),
                "sh",
                str(script),
                str(case_in),
                str(output_dir),
            ]
            result = subprocess.run(command, env=child_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
            if result.returncode != 0 or not measure.is_file():
                raise SubmissionError(
                    f"predict.sh failed on case {case} (exit {result.returncode}); see {log_path}"
                )
            stats = json.loads(measure.read_text())
            prediction = output_dir / f"{case}{file_ending}"
            if not prediction.is_file():
                raise SubmissionError(f"predict.sh wrote no {prediction} for case {case}; see {log_path}")
            gpu = [int(p.read_text()) for p in peaks.glob("*.peak")]
            row = {
                "case": case,
                "seconds": round(stats["seconds"], 3),
                "peak_rss_mb": round(stats["peak_rss_bytes"] / 2**20, 1),
                "peak_gpu_mb": round(max(gpu) / 2**20, 1) if gpu else "",
            }
            if gt_dir is not None:
                from nnunet_sdm.evaluation import evaluate_case, nsd_key

                result = evaluate_case(
                    gt_dir / f"{case}{file_ending}", prediction, list(columns), (tolerance_mm,)
                )
                for value, name in columns.items():
                    metrics = result["metrics"][str(value)]
                    row[f"DSC_{name}"] = round(metrics["Dice"], 6)
                    row[f"NSD_{name}"] = round(metrics[nsd_key(tolerance_mm)], 6)
            rows.append(row)
    fields = ["case", "seconds", "peak_rss_mb", "peak_gpu_mb"]
    for name in columns.values():
        fields += [f"DSC_{name}", f"NSD_{name}"]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, rows


def summarise(rows: list[dict]) -> dict[str, float]:
    """Mean of every numeric column over the cases."""
    means = {}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows if isinstance(r[key], (int, float))]
        if key != "case" and values:
            means[key] = sum(values) / len(values)
    return means
