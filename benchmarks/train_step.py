"""Train-step cost of the SDM trainers against stock nnU-Net at nnU-Net's scale; prints JSON.

Configurations (``--configs``):

* ``a``: Dataset004_Hippocampus (``../shared/data``), nnU-Net's 3d_fullres plans with the ``cpu_small``
  override (patch as planned, 8-64 features, batch 2), 2 foreground classes; real label patches.
* ``b``: the ``flare21`` plans (patch 80 x 192 x 160, batch 2, 32-320 features, nnU-Net's topology for the
  patch) on a synthetic 13-organ dataset at 1.5 x 0.8 x 0.8 mm (``nnunet_sdm.synth.make_multi_organ_dataset``);
  ``--quick``: the same plans at half the patch edge (40 x 96 x 80, 1/8 of the voxels).
* ``c``: ``nnUNetResEncUNetMPlans`` (nnU-Net's ResEnc M planner, its own patch and batch) on (b)'s data;
  ``--quick``: planned on volumes of (b)'s quick patch size (40 x 96 x 80), so its patch is that size,
  at batch 2 (ResEnc M plans 4 there).
* ``tiny``: the two-class synthetic dataset of ``nnunet-sdm synth`` at 16 x 48 x 48 with the ``cpu_small``
  override; seconds, for the test that runs this script end to end (no result to read).

Trainers (``--trainers``): ``nnUNetTrainer`` (stock), ``nnUNetTrainerSDM`` and ``nnUNetTrainerSDM_Xue2020``.
Each configuration x trainer runs in its own process (``--worker``), so its peak memory is its own. A
worker builds the trainer from the plans as ``nnUNetv2_train`` does (``initialize``), makes ``--batches``
fixed batches (random image, label patches and their deep-supervision scales, as nnU-Net's loader
gives them), runs ``--warmup`` steps and then ``--steps`` timed ``train_step`` calls (the data loader is
stock's for every trainer and is not timed). CPU step times vary by 10-20 % from process to process, so
each trainer runs ``--rounds`` times, the trainers' processes interleaved (stock, SDM, Xue, stock, ...),
and the medians are taken over all timed steps of all rounds. Per trainer it reports:

* ``step_s``: median seconds per train step; ``step_ratio_to_stock``: that over stock's median (same run);
* ``sdm_target_s``: median seconds per step spent making the SDM targets (``make_scale_targets``, every
  weighted deep-supervision scale) with the trainer's backend (``auto``: ``edt`` on the CPU, the torch
  transform on a GPU); ``sdm_target_torch_s``: the same targets with the torch transform (the GPU path,
  timed on this device); ``sdm_target_chunked_baseline_s`` (flagship only): the chunked torch transform
  that the package used before its banded one (``baselines/edt_torch_chunked.py``) on the same labels, and
  ``sdm_target_speedup_vs_chunked_baseline``;
* ``sdm_target_host_syncs``: host syncs (``nnunet_sdm.host_syncs.HostSyncCounter``: ``item``, ``tolist``,
  ``bool``, ``cpu``, ``nonzero``, boolean-mask indexing, ...) made while the torch path makes one step's
  targets, i.e. what a CUDA step would wait for; ``train_step_host_syncs``: the same over a whole
  ``train_step`` (the first warm-up step) with the trainer's default backend (stock has some too: it
  reads the loss back);
* ``aten_ops_per_step``: aten operators (views not counted) dispatched by one ``train_step`` after the
  warm-up, forward and backward, with the SDM transform and loss chunked as on an accelerator (on a GPU in
  eager mode each operator is at least one kernel launch, a cost a CPU timing hides; on the CPU they are
  chunked to fit the cache, which multiplies the count: ``aten_ops_per_step_this_device``);
  ``aten_ops_sdm_targets``: those of the SDM targets alone (this device's chunks); ``aten_ops_ratio_to_stock``;
* ``peak_memory_mb``: CPU: the process's peak resident memory minus its resident memory before the trainer
  was built (network, optimiser state, batches, activations, targets), the largest over the rounds;
  CUDA: ``max_memory_allocated`` over the timed steps. ``peak_memory_ratio_to_stock``: over stock's.

Usage: ``python benchmarks/train_step.py [--quick] [--device cpu|cuda] [--compile] [--work DIR]``.
``--quick`` fits 15 minutes on 2 CPU cores. Never a timed assertion: the goals are compared in the JSON
(``goals_met``: every goal of every configuration with the flagship, true or false). The exit status is 1
when any worker failed (its error is in the JSON and on stderr), else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = REPO.parent / "shared" / "data" / "Dataset004_Hippocampus"
TRAINERS = ["nnUNetTrainer", "nnUNetTrainerSDM", "nnUNetTrainerSDM_Xue2020"]
STOCK = "nnUNetTrainer"
GOALS = {
    "sdm_target_host_syncs": 0,
    "flagship_step_ratio_max": 1.10,
    "flagship_peak_memory_ratio_max": 1.15,
    "sdm_target_speedup_vs_chunked_baseline_min": 10.0,
    #: at nnU-Net's scale, (b) and (c): fewer kernel launches on a GPU in eager mode
    "flagship_aten_ops_ratio_max": 1.5,
}
#: configurations at which the aten-op goal is checked (nnU-Net's scale: 13 classes, 5-6 scales)
ATEN_GOAL_CONFIGS = ("b", "c")
TINY_ID = 993
ORGANS_ID, ORGANS_ID_QUICK = 991, 992


# ---- data and plans (once per work folder) -------------------------------------------------------------
def prepare(work: Path, quick: bool, configs: list[str], log) -> dict[str, dict]:
    """Raw datasets and plans for the configurations; returns {config: {plans, dataset_json, label_source}}."""
    from nnunet_sdm.plans import bundled_override, write_plans
    from nnunet_sdm.synth import make_multi_organ_dataset
    from nnunet_sdm.workflow import nnunet_command, nnunet_environment, run_logged

    env = {**os.environ, **nnunet_environment(work)}
    raw, preprocessed = Path(env["nnUNet_raw"]), Path(env["nnUNet_preprocessed"])
    out: dict[str, dict] = {}

    def plan(dataset_id: int, name: str, *planner: str) -> Path:
        folder = preprocessed / name
        plans_file = folder / ("nnUNetResEncUNetMPlans.json" if planner else "nnUNetPlans.json")
        if not plans_file.is_file():
            # 3d_fullres only; the trainers' initialize() reads the preprocessed folder's file type
            # (the ResEnc plans share nnUNetPlans_3d_fullres, so they need no preprocessing of their own)
            command = [
                nnunet_command("nnUNetv2_plan_and_preprocess"),
                "-d",
                str(dataset_id),
                "-np",
                "2",
                "-npfp",
                "2",
            ]
            command += ["--no_pp", *planner] if planner else ["-c", "3d_fullres"]
            run_logged(command, env, work / f"plan_{name}{'_resenc' if planner else ''}.log", announce=log)
        return plans_file

    if "a" in configs:
        if not HIPPOCAMPUS.is_dir():
            log(f"configuration a skipped: {HIPPOCAMPUS} is absent")
        else:
            link = raw / HIPPOCAMPUS.name
            if not link.exists():
                raw.mkdir(parents=True, exist_ok=True)
                link.symlink_to(HIPPOCAMPUS)
            plan(4, HIPPOCAMPUS.name)
            folder = preprocessed / HIPPOCAMPUS.name
            write_plans(folder, bundled_override("cpu_small"), "nnUNetPlans_cpu_small", "3d_fullres")
            out["a"] = {"plans": folder / "nnUNetPlans_cpu_small.json", "labels": "hippocampus"}
    if "tiny" in configs:
        from nnunet_sdm.synth import make_synthetic_dataset

        name = f"Dataset{TINY_ID:03d}_SDMTiny"
        if not (raw / name / "dataset.json").is_file():
            make_synthetic_dataset(raw, dataset_id=TINY_ID, name="SDMTiny", num_training=4, num_test=0)
        plan(TINY_ID, name)
        folder = preprocessed / name
        write_plans(folder, bundled_override("cpu_small"), "nnUNetPlans_cpu_small", "3d_fullres")
        out["tiny"] = {"plans": folder / "nnUNetPlans_cpu_small.json", "labels": "synthetic"}
    if {"b", "c"} & set(configs):
        dataset_id = ORGANS_ID_QUICK if quick else ORGANS_ID
        name = "SDMOrgansQuick" if quick else "SDMOrgans"
        shape = (40, 96, 80) if quick else (96, 240, 200)
        dataset_name = f"Dataset{dataset_id:03d}_{name}"
        if not (raw / dataset_name / "dataset.json").is_file():
            log(f"writing the synthetic 13-organ dataset {dataset_name} {shape}")
            make_multi_organ_dataset(raw, dataset_id=dataset_id, name=name, shape=shape, num_training=4)
        folder = preprocessed / dataset_name
        if "b" in configs:
            plan(dataset_id, dataset_name)
            override = work / "flare21_quick.json" if quick else bundled_override("flare21")
            if quick:  # the flare21 override at half the patch edge
                flare = json.loads(bundled_override("flare21").read_text())
                flare["configuration"]["patch_size"] = [40, 96, 80]
                flare["description"] = "flare21 at half the patch edge (benchmarks/train_step.py --quick)"
                override.write_text(json.dumps(flare, indent=1))
            write_plans(folder, override, "nnUNetPlans_flare21", "3d_fullres")
            out["b"] = {"plans": folder / "nnUNetPlans_flare21.json", "labels": "organs"}
        if "c" in configs:
            plans_file = plan(dataset_id, dataset_name, "-pl", "nnUNetPlannerResEncM")
            if quick:  # ResEnc M's own plans for this patch, at batch 2 like (b) (it plans 4 here)
                override = work / "resenc_quick.json"
                override.write_text(json.dumps({"configuration": {"batch_size": 2}}))
                source = plans_file.stem
                plans_file = write_plans(
                    folder, override, f"{source}_quick", "3d_fullres", source_plans=source
                )
            out["c"] = {"plans": plans_file, "labels": "organs"}
    for config in out.values():
        config["dataset_json"] = Path(config["plans"]).parent / "dataset.json"
        config["env"] = {k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    return out


# ---- one trainer in its own process ------------------------------------------------------------------------
@contextlib.contextmanager
def accelerator_chunking(trainer):
    """The trainer's SDM transform and SDM-head loss chunked as on an accelerator (few, large chunks)
    instead of the CPU's cache-sized ones, so that a CPU run counts the operators a GPU step launches."""
    from nnunet_sdm.distance._edt_torch import DEFAULT_CHUNK_DEVICE
    from nnunet_sdm.losses import SDMHeadTermsLoss
    from nnunet_sdm.losses.sdm_head import DEFAULT_CHUNK_DEVICE as LOSS_CHUNK_DEVICE

    heads = [m for m in trainer.loss.modules() if isinstance(m, SDMHeadTermsLoss)]
    saved = trainer.sdm_chunk_elements, [m.chunk_elements for m in heads]
    trainer.sdm_chunk_elements = DEFAULT_CHUNK_DEVICE
    for m in heads:
        m.chunk_elements = LOSS_CHUNK_DEVICE
    try:
        yield
    finally:
        trainer.sdm_chunk_elements = saved[0]
        for m, value in zip(heads, saved[1]):
            m.chunk_elements = value


class AtenOpCounter:
    """Counts the aten operators dispatched in a block (views, which launch no kernel, not counted), by name
    (``calls``) and in total (``count``); backward included when it runs inside the block."""

    def __init__(self) -> None:
        from collections import Counter

        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.calls: Counter[str] = Counter()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if not getattr(func, "is_view", False):
                    counter.calls[func.overloadpacket.__name__] += 1
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()

    @property
    def count(self) -> int:
        return sum(self.calls.values())

    def __enter__(self) -> AtenOpCounter:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _label_patches(source: str, patch, spacing, batch_size: int, count: int, seed: int):
    """``count`` label patches (B, 1, *patch) as uint8 numpy."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    patches = []
    if source == "hippocampus":
        files = sorted((HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
        for _ in range(count * batch_size):
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(files[rng.integers(len(files))])))
            pad = [
                (max(0, p - n) // 2, max(0, p - n) - max(0, p - n) // 2) for p, n in zip(patch, label.shape)
            ]
            label = np.pad(label, pad)
            start = [rng.integers(0, n - p + 1) for n, p in zip(label.shape, patch)]
            patches.append(label[tuple(slice(s, s + p) for s, p in zip(start, patch))])
    elif source == "synthetic":  # two boxes, one thin, as the synthetic dataset's classes
        for _ in range(count * batch_size):
            label = np.zeros(patch, dtype=np.uint8)
            z, y, x = (int(rng.integers(0, max(1, p // 4))) for p in patch)
            label[z : z + patch[0] // 2, y : y + patch[1] // 2, x : x + patch[2] // 2] = 1
            label[z : z + patch[0] // 2, y + 2 : y + 4, x : x + patch[2] // 2] = 2
            patches.append(label)
    else:
        from nnunet_sdm.synth import multi_organ_labels

        for _ in range(count * batch_size):
            patches.append(multi_organ_labels(patch, spacing, 13, rng))
    stacked = np.stack(patches).astype(np.uint8)
    return stacked.reshape(count, batch_size, 1, *patch)


def worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    from nnunet_sdm.host_syncs import HostSyncCounter

    baseline_mb = _rss_mb()
    spec = json.loads(args.worker)
    os.environ.update(spec["env"])
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plans = json.loads(Path(spec["plans"]).read_text())
    dataset_json = json.loads(Path(spec["dataset_json"]).read_text())
    trainer_class = _trainer_class(spec["trainer"])
    trainer = trainer_class(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, device)
    trainer.initialize()
    patch = list(trainer.configuration_manager.patch_size)
    spacing = [float(s) for s in trainer.configuration_manager.spacing]
    scales = trainer._get_deep_supervision_scales()
    labels = _label_patches(spec["labels"], patch, spacing, trainer.batch_size, args.batches, seed=1)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for patch_labels in labels:
        full = torch.from_numpy(patch_labels).float()
        targets = [
            F.interpolate(full, [round(p * s) for p, s in zip(patch, scale)], mode="nearest-exact")
            for scale in scales
        ]
        data = torch.randn(full.shape, generator=generator) + full / 13
        batches.append({"data": data, "target": targets, "keys": ["case"] * len(full)})

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    timings, target_times = [], []
    has_targets = hasattr(trainer, "make_scale_targets")
    if has_targets:
        make_targets = trainer.make_scale_targets

        def timed_targets(targets):  # benchmark instrumentation on this instance only
            sync()
            start = time.perf_counter()
            out = make_targets(targets)
            sync()
            target_times.append(time.perf_counter() - start)
            return out

        trainer.make_scale_targets = timed_targets
    with HostSyncCounter() as step_syncs:  # the first warm-up step; its time is not counted
        trainer.train_step(batches[0])
    for i in range(1, args.warmup):
        trainer.train_step(batches[i % len(batches)])
    with AtenOpCounter() as step_ops:  # one more untimed step (the counting mode slows it down)
        trainer.train_step(batches[args.warmup % len(batches)])
    accelerator_ops = step_ops
    if device.type == "cpu" and hasattr(trainer, "sdm_chunk_elements"):
        with accelerator_chunking(trainer), AtenOpCounter() as accelerator_ops:
            trainer.train_step(batches[(args.warmup + 1) % len(batches)])
    target_ops = 0
    if has_targets:
        with AtenOpCounter() as ops:
            make_targets([t.to(device) for t in batches[0]["target"]])
        target_ops = ops.count
    target_times.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.steps):
        sync()
        start = time.perf_counter()
        trainer.train_step(batches[i % len(batches)])
        sync()
        timings.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mb
    result = {
        "trainer": spec["trainer"],
        "network": type(trainer.network).__name__,
        "backbone": plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"],
        "patch_size": patch,
        "batch_size": trainer.batch_size,
        "spacing": spacing,
        "foreground_classes": len(trainer.label_manager.foreground_labels),
        "deep_supervision_scales": len(scales),
        "step_s": statistics.median(timings),
        "step_s_all": timings,
        "peak_memory_mb": peak_mb,
        "train_step_host_syncs": step_syncs.count,
        "train_step_host_sync_calls": dict(step_syncs.calls),
        "aten_ops_per_step": accelerator_ops.count,
        "aten_ops_per_step_this_device": step_ops.count,
        "aten_ops_sdm_targets": target_ops,
        "aten_ops_most_called": dict(step_ops.calls.most_common(12)),
    }
    if has_targets:
        result["sdm_backend"] = trainer.sdm_backend
        result["sdm_target_s"] = statistics.median(target_times)
        result["sdm_target_s_all"] = list(target_times)
        trainer.make_scale_targets = make_targets
        if args.target_costs:
            result.update(_torch_target_costs(trainer, batches, args, sync))
    return result


def _torch_target_costs(trainer, batches, args, sync) -> dict:
    """Host syncs and time of the torch path for one step's targets (and the chunked baseline's time)."""

    from nnunet_sdm.host_syncs import HostSyncCounter

    device = trainer.device
    targets = [t.to(device) for t in batches[0]["target"]]
    backend = trainer.sdm_backend
    trainer.sdm_backend = "torch"
    with HostSyncCounter() as syncs:
        trainer.make_scale_targets(targets)
    times = []
    for _ in range(args.target_repeats):
        sync()
        start = time.perf_counter()
        new = trainer.make_scale_targets(targets)
        sync()
        times.append(time.perf_counter() - start)
    trainer.sdm_backend = backend
    out = {
        "sdm_target_host_syncs": syncs.count,
        "sdm_target_host_sync_calls": dict(syncs.calls),
        "sdm_target_torch_s": statistics.median(times),
    }
    if trainer.truncation_mm is None:
        return out
    from baselines.edt_torch_chunked import DEFAULT_CHUNK_CPU, DEFAULT_CHUNK_DEVICE, signed_edt_torch

    chunk = DEFAULT_CHUNK_CPU if device.type == "cpu" else DEFAULT_CHUNK_DEVICE
    times, deviation = [], 0.0
    for _ in range(args.target_repeats):
        sync()
        start = time.perf_counter()
        old = {}
        with HostSyncCounter() as old_syncs:
            for i, scale in new.items():
                masks = scale.masks
                flat = masks.reshape(-1, *masks.shape[2:])
                sdm = signed_edt_torch(flat, scale.spacing, chunk).view(masks.shape)
                old[i] = (sdm / trainer.truncation_mm).clamp_(-1, 1)
        sync()
        times.append(time.perf_counter() - start)
    for i, scale in new.items():
        deviation = max(deviation, float((old[i] - scale.distance.float()).abs().max()))
    out["sdm_target_chunked_baseline_s"] = statistics.median(times)
    out["sdm_target_chunked_baseline_host_syncs"] = old_syncs.count
    out["sdm_target_speedup_vs_chunked_baseline"] = (
        out["sdm_target_chunked_baseline_s"] / out["sdm_target_torch_s"]
    )
    out["sdm_target_max_abs_diff_to_chunked_baseline"] = deviation  # float16 storage of the new targets
    return out


def _trainer_class(name: str):
    from nnunet_sdm.workflow import trainer_class

    return trainer_class(name)


# ---- driver -------------------------------------------------------------------------------------------------
def run_worker(config: dict, trainer: str, args, log, target_costs: bool) -> dict:
    spec = {
        "plans": str(config["plans"]),
        "dataset_json": str(config["dataset_json"]),
        "labels": config["labels"],
        "env": config["env"],
        "trainer": trainer,
    }
    command = [sys.executable, __file__, "--worker", json.dumps(spec), "--device", args.device]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batches", str(args.batches)]
    command += ["--target-repeats", str(args.target_repeats), "--threads", str(args.threads)]
    command += ["--target-costs"] if target_costs else []
    env = {**os.environ, "nnUNet_compile": "t" if args.compile else "f"}
    start = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        log(result.stdout[-3000:] + result.stderr[-3000:])
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return {"trainer": trainer, "error": f"worker exited {result.returncode}: {last}"}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.time() - start
    log(
        f"  {trainer}: step {out['step_s']:.3f} s, peak {out['peak_memory_mb']:.0f} MB"
        + (f", SDM targets {out['sdm_target_s']:.3f} s" if "sdm_target_s" in out else "")
    )
    return out


def merge_rounds(rounds: list[dict]) -> dict:
    """One trainer's rounds (processes) as one result: medians over all timed steps, the largest peak."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    merged = {**rounds[0]}
    merged["rounds"] = len(rounds)
    merged["step_s_all"] = [s for r in rounds for s in r["step_s_all"]]
    merged["step_s"] = statistics.median(merged["step_s_all"])
    merged["step_s_per_round"] = [r["step_s"] for r in rounds]
    merged["peak_memory_mb"] = max(r["peak_memory_mb"] for r in rounds)
    merged["peak_memory_mb_per_round"] = [r["peak_memory_mb"] for r in rounds]
    if "sdm_target_s_all" in merged:
        merged["sdm_target_s_all"] = [s for r in rounds for s in r["sdm_target_s_all"]]
        merged["sdm_target_s"] = statistics.median(merged["sdm_target_s_all"])
    return merged


def add_ratios(trainers: dict[str, dict]) -> None:
    stock = trainers.get(STOCK)
    for result in trainers.values():
        result.setdefault("sdm_target_host_syncs", 0)  # stock makes no SDM targets
        if stock and "error" not in stock and "error" not in result:
            result["step_ratio_to_stock"] = result["step_s"] / stock["step_s"]
            result["peak_memory_ratio_to_stock"] = result["peak_memory_mb"] / stock["peak_memory_mb"]
            result["aten_ops_ratio_to_stock"] = result["aten_ops_per_step"] / stock["aten_ops_per_step"]


def config_goals(name: str, trainers: dict[str, dict]) -> dict:
    """The goals of one configuration, met true or false; a goal whose measurement failed (a worker error,
    named under ``errors``) is false."""
    flagship = trainers["nnUNetTrainerSDM"]
    ok = "step_ratio_to_stock" in flagship  # stock and the flagship both measured
    syncs = max(t.get("sdm_target_host_syncs", 0) for t in trainers.values())
    checks = {
        "sdm_target_host_syncs_zero": ok and syncs == GOALS["sdm_target_host_syncs"],
        "flagship_step_ratio_le_1.10": ok
        and flagship["step_ratio_to_stock"] <= GOALS["flagship_step_ratio_max"],
        "flagship_peak_memory_ratio_le_1.15": ok
        and flagship["peak_memory_ratio_to_stock"] <= GOALS["flagship_peak_memory_ratio_max"],
    }
    if name in ATEN_GOAL_CONFIGS:
        checks["flagship_aten_ops_ratio_le_1.5"] = (
            ok and flagship["aten_ops_ratio_to_stock"] <= GOALS["flagship_aten_ops_ratio_max"]
        )
    speedup = flagship.get("sdm_target_speedup_vs_chunked_baseline")
    if speedup is not None or not ok:
        checks["sdm_target_speedup_ge_10"] = (
            speedup is not None and speedup >= GOALS["sdm_target_speedup_vs_chunked_baseline_min"]
        )
    errors = {t: r["error"] for t, r in trainers.items() if "error" in r}
    if errors:
        checks["errors"] = errors
    return checks


def goals(results: dict[str, dict]) -> dict:
    """:func:`config_goals` of every configuration with the flagship."""
    return {
        name: config_goals(name, config["trainers"])
        for name, config in results.items()
        if "nnUNetTrainerSDM" in config["trainers"]
    }


def machine(device: str) -> dict:
    from importlib.metadata import version

    import nnunetv2  # noqa: F401
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nnunetv2": version("nnunetv2"),
        "edt": version("edt"),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small patches for (b)/(c), fewer steps")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="nnUNet_compile=t (nnU-Net's torch.compile)")
    parser.add_argument("--configs", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c", "tiny"])
    parser.add_argument("--trainers", nargs="+", default=TRAINERS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet_sdm_train_step"))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 quick, 5 full)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 1 quick, 2 full)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="processes per trainer, interleaved (default 2)"
    )
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--target-costs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target-repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per worker (0: torch's default)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.quick else 5)
    args.warmup = args.warmup or (1 if args.quick else 2)
    args.rounds = args.rounds or 2
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    configs = prepare(args.work, args.quick, args.configs, log)
    results = {}
    for name, config in configs.items():
        log(f"configuration {name}: {config['plans']}")
        rounds = [
            {t: run_worker(config, t, args, log, target_costs=r == 0) for t in args.trainers}
            for r in range(args.rounds)
        ]
        trainers = {t: merge_rounds([r[t] for r in rounds]) for t in args.trainers}
        add_ratios(trainers)
        results[name] = {"plans": str(config["plans"]), "trainers": trainers}
    report = {
        "benchmark": "train_step",
        "quick": args.quick,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "compile": args.compile,
        "machine": machine(args.device),
        "configs": results,
        "goals": GOALS,
        "goals_met": goals(results),
        "wall_s": time.time() - started,
    }
    text = json.dumps(
        report, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v
    )
    if args.out:
        args.out.write_text(text)
    print(text)
    failed = [f"{c}/{t}" for c, r in results.items() for t, v in r["trainers"].items() if "error" in v]
    if failed:
        log(f"train_step: {len(failed)} worker(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
