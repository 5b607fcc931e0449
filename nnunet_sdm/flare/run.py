"""``nnunet-sdm flare run``: run a submission's ``predict.sh`` case by case and measure it.

``run_submission`` runs ``predict.sh`` once per case, through a temporary input folder holding only that
case, and writes a CSV with, per case:

- ``seconds``: wall time of ``predict.sh`` for the case, including start-up and model loading (as a
  container run per case would be timed);
- ``peak_rss_mb``: the peak resident memory of the largest process ``predict.sh`` started (nnU-Net's
  main process, or one of its preprocessing/export workers if larger): ``getrusage(RUSAGE_CHILDREN)
  .ru_maxrss`` read in a fresh wrapper process per case (``templates/measure.py``), so it is the case's
  own peak, not a running maximum; not the sum over processes;
- ``peak_gpu_mb``: ``torch.cuda.max_memory_allocated()`` at exit of every process that initialised
  CUDA (the largest is reported; empty when CUDA was not used). It is read by a ``sitecustomize``
  hook (``templates/sitecustomize.py``) put on the child's ``PYTHONPATH``; it counts tensors allocated by
  PyTorch, not the CUDA context or the caching allocator's reserve (``nvidia-smi`` shows more);
- with ``--gt``: ``DSC_<label>`` and ``NSD_<label>`` from :func:`nnunet_sdm.evaluation.evaluate_case`:
  FLARE21's NSD at ``--tolerance`` mm (default 1), or with ``--scoring flare22|flare23|flare24`` that
  challenge's rules (:mod:`nnunet_sdm.evaluation.challenge`).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nnunet_sdm.dataset_json import foreground_labels
from nnunet_sdm.flare.package import PREDICT_SH, SUBMISSION_JSON, SubmissionError
from nnunet_sdm.flare.render import template_text

__all__ = ["FLARE_NSD_TOLERANCE_MM", "find_cases", "run_submission", "summarise"]

FLARE_NSD_TOLERANCE_MM = 1.0


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
    return {value: name.replace(" ", "_") for value, name in foreground_labels({"labels": labels}).items()}


def run_submission(
    submission: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    gt_dir: str | Path | None = None,
    csv_path: str | Path | None = None,
    device: str | None = None,
    tolerance_mm: float = FLARE_NSD_TOLERANCE_MM,
    env: dict[str, str] | None = None,
    scoring: str | None = None,
) -> tuple[Path, list[dict]]:
    """Run ``predict.sh`` of ``submission`` on every case of ``input_dir``, one case at a time.

    Predictions land in ``output_dir``; the per-case CSV (default ``output_dir/flare_run.csv``) and
    the children's output (``<csv>.log``) beside it. ``device`` sets predict.sh's ``DEVICE``; ``env``
    is the environment for predict.sh (default: this process's); ``scoring`` a FLARE22-24 rule set for
    DSC and NSD (default: NSD at ``tolerance_mm``). Returns the CSV path and the rows.
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
        (hook / "sitecustomize.py").write_text(template_text("sitecustomize.py"))
        measure_script = tmp / "measure.py"
        measure_script.write_text(template_text("measure.py"))
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
                str(measure_script),
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
                    gt_dir / f"{case}{file_ending}", prediction, list(columns), (tolerance_mm,), scoring
                )
                nsd_name = "NSD" if scoring else nsd_key(tolerance_mm)
                for value, name in columns.items():
                    metrics = result["metrics"][str(value)]
                    row[f"DSC_{name}"] = round(metrics["Dice"], 6)
                    row[f"NSD_{name}"] = round(metrics[nsd_name], 6)
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
