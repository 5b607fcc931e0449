"""Results of the benchmark: ratios to stock, paired statistics over seeds, results.json, results.md and
the figures."""

from __future__ import annotations

import json
import math

import numpy as np

from nnunet_sdm.evaluation.compare import compare_folders, markdown_table
from nnunet_sdm.plots import comparison_violins, training_curves_plot

from .data import Data
from .inference import CHOICE, method_name, mode_folder, modes_of
from .settings import RATIO_METRICS, STOCK, TOLERANCES, Settings, note
from .steps import epoch_times, first_epoch_reaching, read_state, trainer_paths, training_curves


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


def foreground_per_case(comparison) -> dict[str, dict[str, np.ndarray]]:
    """``values[trainer][metric]``: per test case, the mean over the foreground classes (or regions)."""
    return {
        method: {
            metric: np.mean([comparison.values[method][lb][metric] for lb in comparison.labels], axis=0)
            for metric in comparison.metrics
        }
        for method in comparison.methods
    }


#: bootstrap replicates of the case component of the paired intervals
BOOTSTRAP_REPLICATES = 10000
#: power at which the minimal detectable effect is stated
POWER = 0.8


def run_level_interval(
    mine: np.ndarray,
    ref: np.ndarray,
    ratio: bool,
    confidence: float = 0.95,
    replicates: int = BOOTSTRAP_REPLICATES,
    generator: np.random.Generator | None = None,
) -> dict:
    """The paired comparison of one metric, runs first, then cases (``mine``, ``ref``: (seeds, cases)).

    Per seed (the random unit: one training of each trainer on the same batch stream) the statistic is the
    log ratio of the case means (HD95, ASSD) or the mean per-case difference (Dice, NSD). Its variance over
    runs is ``sd^2 / n_seeds``; the variance from the choice of test cases is that of the seed mean when the
    cases are drawn again with replacement (the same draw for every seed and both trainers). The interval
    is ``mean +- t(n_seeds - 1) * se`` with ``se^2`` their sum; the minimal detectable effect (two-sided,
    ``confidence``, :data:`POWER`) is ``(t(1 - alpha/2) + t(POWER)) * se``. Ratios are reported back on the
    ratio scale (estimate = geometric mean of the per-seed ratios; half-width and MDE as relative changes,
    ``exp(x) - 1``).
    """
    from scipy import stats

    generator = generator if generator is not None else np.random.default_rng(0)
    n_seeds, n_cases = mine.shape

    def per_seed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if ratio:
            return np.log(np.maximum(a.mean(-1), 1e-12) / np.maximum(b.mean(-1), 1e-12))
        return (a - b).mean(-1)

    values = per_seed(mine, ref)
    mean = float(values.mean())
    draws = generator.integers(0, n_cases, size=(replicates, n_cases))
    case_means = per_seed(mine[:, draws], ref[:, draws]).mean(0)  # (replicates,)
    var_cases = float(case_means.var(ddof=1)) if replicates > 1 else 0.0
    var_runs = float(values.var(ddof=1)) / n_seeds if n_seeds > 1 else float("nan")
    se = math.sqrt(var_runs + var_cases) if n_seeds > 1 else float("nan")
    df = max(n_seeds - 1, 1)
    t_conf = float(stats.t.ppf(0.5 + confidence / 2, df))
    t_power = float(stats.t.ppf(POWER, df))
    half, mde = t_conf * se, (t_conf + t_power) * se
    lo, hi = mean - half, mean + half
    if ratio:
        to_scale = math.exp
        estimate, interval = math.exp(mean), [math.exp(lo), math.exp(hi)] if n_seeds > 1 else None
        half_width, detectable = (math.expm1(half), math.expm1(mde)) if n_seeds > 1 else (None, None)
    else:
        to_scale = float
        estimate, interval = mean, [lo, hi] if n_seeds > 1 else None
        half_width, detectable = (half, mde) if n_seeds > 1 else (None, None)
    lower_is_better, no_change = ratio, 0.0
    if interval is None:
        verdict = "undecided"
    else:
        good = hi < no_change if lower_is_better else lo > no_change
        bad = lo > no_change if lower_is_better else hi < no_change
        verdict = "better" if good else "worse" if bad else "undecided"
    better = (mine < ref) if lower_is_better else (mine > ref)
    worse = (mine > ref) if lower_is_better else (mine < ref)
    return {
        "kind": "ratio" if ratio else "difference",
        "estimate": estimate,
        "interval": interval,
        "confidence": confidence,
        "verdict": verdict,
        "half_width": half_width,
        "minimal_detectable_effect": detectable,
        "power": POWER,
        "n_seeds": n_seeds,
        "per_seed": [to_scale(v) for v in values],
        "variance_share_of_runs": (var_runs / (var_runs + var_cases)) if n_seeds > 1 and se > 0 else None,
        "case_seeds": {
            "better": int(better.sum()),
            "tied": int((mine == ref).sum()),
            "worse": int(worse.sum()),
        },
    }


def paired_intervals(
    per_seed_cases: dict[int, dict[str, dict[str, np.ndarray]]],
    stock: str = STOCK,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = 0.95,
    generator_seed: int = 0,
) -> dict:
    """:func:`run_level_interval` of every trainer against ``stock`` and every paired metric: "better" /
    "worse" only when the interval lies on one side of no change (ratio 1, difference 0), else "undecided";
    with the interval's half-width and the minimal detectable effect next to it."""
    seeds = sorted(per_seed_cases)
    trainers = [t for t in per_seed_cases[seeds[0]] if t != stock]
    out: dict[str, dict] = {}
    for trainer in trainers:
        entry: dict[str, dict] = {}
        for metric in PAIRED_METRICS:
            ratio = metric in RATIO_METRICS
            mine = np.stack([per_seed_cases[s][trainer][metric] for s in seeds])  # (seeds, cases)
            ref = np.stack([per_seed_cases[s][stock][metric] for s in seeds])
            if not (np.isfinite(mine).all() and np.isfinite(ref).all()):
                entry[metric] = {"kind": "ratio" if ratio else "difference", "estimate": None}
                continue
            entry[metric] = run_level_interval(
                mine, ref, ratio, confidence, replicates, np.random.default_rng(generator_seed)
            )
        out[trainer] = entry
    return out


def _interval_cell(e: dict) -> str:
    if e.get("estimate") is None:
        return "n/a"
    counts = e["case_seeds"]
    if e["interval"] is None:
        return f"{e['estimate']:.3f} (one seed: no interval)"
    if e["kind"] == "ratio":
        spread = f"+-{100 * e['half_width']:.1f} %, MDE {100 * e['minimal_detectable_effect']:.1f} %"
    else:
        spread = f"+-{e['half_width']:.4f}, MDE {e['minimal_detectable_effect']:.4f}"
    return (
        f"{e['estimate']:.3f} [{e['interval'][0]:.3f}, {e['interval'][1]:.3f}] **{e['verdict']}** "
        f"({spread}; {counts['better']}/{counts['tied']}/{counts['worse']})"
    )


def intervals_table(intervals: dict, seeds: list[int], n_cases: int) -> str:
    """Markdown of :func:`paired_intervals`: estimate [interval] verdict (half-width, minimal detectable
    effect; better / tied / worse counts)."""
    lines = [
        "| Trainer | "
        + " | ".join(f"{m} {'ratio' if m in RATIO_METRICS else 'diff'}" for m in PAIRED_METRICS)
        + " |",
        "|---|" + "|".join([":---:"] * len(PAIRED_METRICS)) + "|",
    ]
    for trainer, entry in intervals.items():
        lines.append("| " + " | ".join([trainer, *(_interval_cell(entry[m]) for m in PAIRED_METRICS)]) + " |")
    lines += [
        "",
        f"Paired by seed (the same batch stream for every trainer of a seed), over {len(seeds)} seeds and "
        f"{n_cases} test cases: the estimate (HD95/ASSD: geometric mean of the per-seed ratios of the case "
        "means; Dice/NSD: mean difference), its 95 % interval (t over seeds, with the test cases' bootstrap "
        "variance added), the verdict (better / worse only when the interval excludes no change), the "
        f"half-width and the minimal detectable effect at {int(100 * POWER)} % power; then the case-seeds where "
        "the trainer is better / tied / worse than stock (foreground mean per case).",
    ]
    return "\n".join(lines)


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


def _compare_on_test_cases(settings: Settings, data: Data, folders: list, names: list[str]):
    return compare_folders(
        folders,
        data.test_labels,
        list(data.labels),
        TOLERANCES,
        names=names,
        num_workers=settings.num_processes,
        dataset_json=settings.out / "test" / "dataset.json",
        file_ending=data.file_ending,
        progress=False,
        log=note,
    )


def compare_seed(settings: Settings, data: Data, trainers: list[str], seed: int | None = None):
    folders = [trainer_paths(settings, data, t, seed).predictions for t in trainers]
    return _compare_on_test_cases(settings, data, folders, trainers)


def chosen(settings: Settings, data: Data, trainer: str, seed: int) -> bool:
    return (trainer_paths(settings, data, trainer, seed).modes / CHOICE).is_file()


def compare_modes(settings: Settings, data: Data, trainers: list[str], seed: int):
    """Every trainer's inference modes of one seed (:mod:`.inference`) as methods of one comparison."""
    names, folders = [], []
    for trainer in trainers:
        paths = trainer_paths(settings, data, trainer, seed)
        for mode in ("plain", *modes_of(trainer)):
            names.append(method_name(trainer, mode))
            folders.append(mode_folder(paths, mode))
    return _compare_on_test_cases(settings, data, folders, names)


def choices_table(choices: dict[int, dict[str, dict]]) -> str:
    """Markdown: per seed and trainer, what was chosen on the validation cases."""
    lines = [
        "| seed | Trainer | nnU-Net pp | SDM-guided depth (mm) | nnU-Net pp after SDM-guided | best mode |",
        "|---:|---|---|---:|---|---|",
    ]
    for seed, per_trainer in choices.items():
        for trainer, c in per_trainer.items():
            guided = c.get("sdm_guided")
            depth = (
                "-"
                if guided is None
                else ("off" if guided["depth_mm"] is None else f"{guided['depth_mm']:g}")
            )
            cells = [
                str(seed),
                trainer,
                ", ".join(c["pp"]) or "none",
                depth,
                "-" if "sdm_guided_pp" not in c else ", ".join(c["sdm_guided_pp"]) or "none",
                c["best"],
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_verdict(goal: dict | None, intervals: dict[str, dict]) -> dict | None:
    """Whether ``goal`` (a preset's, :func:`.settings.check_goal`) is reached, from the paired intervals of
    every method against the goal's reference (``intervals[reference]``).

    Calibrated: the goal's HD95 effect counts as resolvable only when the measured minimal detectable HD95
    effect is no larger than it (``powered``); the verdict says when it is not.
    """
    if goal is None:
        return None
    reference = method_name(goal["against"], goal["against_mode"])
    entry = intervals.get(reference, {}).get(method_name(goal["trainer"], goal["mode"]))
    if entry is None or entry["HD95"].get("estimate") is None or entry["Dice"].get("estimate") is None:
        return None
    hd95, dice = entry["HD95"], entry["Dice"]
    if hd95["interval"] is None:
        return None
    at_most, below, at_least = (
        goal["hd95_ratio_at_most"],
        goal["hd95_interval_below"],
        goal["dice_difference_at_least"],
    )
    checks = {
        f"HD95 ratio <= {at_most:g}": hd95["estimate"] <= at_most,
        f"HD95 interval below {below:g}": hd95["interval"][1] < below,
        f"Dice >= reference {at_least:+g}": dice["estimate"] >= at_least,
    }
    effect = 1.0 - at_most
    return {
        "method": method_name(goal["trainer"], goal["mode"]),
        "reference": reference,
        "checks": checks,
        "reached": all(checks.values()),
        "powered": hd95["minimal_detectable_effect"] <= effect,
        "goal_hd95_effect": effect,
        "hd95": hd95,
        "dice": dice,
    }


GOAL_NOT_EVALUATED = (
    "**Goal** (the preset's): not evaluated: it needs the goal's trainer and reference among the results, "
    "at least two seeds (an interval) and finite HD95 and Dice."
)


def goal_text(goal: dict) -> str:
    h, d = goal["hd95"], goal["dice"]
    power = (
        f"the HD95 minimal detectable effect ({100 * h['minimal_detectable_effect']:.1f} %) is within the goal's "
        f"{100 * goal['goal_hd95_effect']:.0f} %"
        if goal["powered"]
        else f"**underpowered**: the HD95 minimal detectable effect ({100 * h['minimal_detectable_effect']:.1f} %) "
        f"exceeds the goal's {100 * goal['goal_hd95_effect']:.0f} %, so this set-up cannot resolve it"
    )
    return (
        f"**Goal** ({goal['method']} against {goal['reference']}: {', '.join(goal['checks'])}): "
        f"**{'reached' if goal['reached'] else 'not reached'}** "
        f"(failed: {', '.join(k for k, v in goal['checks'].items() if not v) or 'none'}). "
        f"HD95 ratio {h['estimate']:.3f} [{h['interval'][0]:.3f}, {h['interval'][1]:.3f}], Dice difference "
        f"{d['estimate']:+.4f} [{d['interval'][0]:+.4f}, {d['interval'][1]:+.4f}]; {power}."
    )


def modes_section(settings: Settings, data: Data, trainers: list[str], results: dict) -> str:
    """Compare the inference modes over all seeds; adds ``results["inference_modes"]``; returns markdown."""
    per_seed, per_seed_cases, choices = {}, {}, {}
    n_cases = 0
    for seed in settings.seeds:
        comparison = compare_modes(settings, data, trainers, seed)
        per_seed[seed] = foreground_means(comparison)
        per_seed_cases[seed] = foreground_per_case(comparison)
        n_cases = len(comparison.cases)
        choices[seed] = {
            t: json.loads((trainer_paths(settings, data, t, seed).modes / CHOICE).read_text())
            for t in trainers
        }
    stock_pp = method_name(STOCK, "pp")
    entry = {
        "foreground_mean_per_seed": {str(k): v for k, v in per_seed.items()},
        "choices": {str(k): v for k, v in choices.items()},
        "paired_intervals_vs_stock": paired_intervals(per_seed_cases),
        "paired_intervals_vs_stock_pp": paired_intervals(per_seed_cases, stock=stock_pp),
    }
    entry["goal"] = goal_verdict(
        settings.goal,
        {STOCK: entry["paired_intervals_vs_stock"], stock_pp: entry["paired_intervals_vs_stock_pp"]},
    )
    results["inference_modes"] = entry
    lines = [
        "## Inference modes, chosen on the fold's validation cases",
        "",
        "Per trainer and seed (benchmarks/accuracy_harness/inference.py): nnU-Net's post-processing "
        "(`nnUNetv2_determine_postprocessing` on the validation predictions, `nnUNetv2_apply_postprocessing` "
        "on the test predictions), SDM-guided post-processing (depth chosen on the validation cases), both, and "
        "the best of them on the validation cases. Test cases are never used to choose.",
        "",
        paired_table(per_seed, paired_over_seeds(per_seed)),
        "",
        f"Paired 95 % intervals against {STOCK} (runs first, then cases):",
        "",
        intervals_table(entry["paired_intervals_vs_stock"], settings.seeds, n_cases),
        "",
        f"Paired 95 % intervals against {stock_pp}:",
        "",
        intervals_table(entry["paired_intervals_vs_stock_pp"], settings.seeds, n_cases),
        "",
        "What was chosen on the validation cases:",
        "",
        choices_table(choices),
        "",
    ]
    if settings.goal is not None:
        lines += [goal_text(entry["goal"]) if entry["goal"] is not None else GOAL_NOT_EVALUATED, ""]
    return "\n".join(lines)


def compare_and_write(settings: Settings, data: Data, manifest: dict, trainers: list[str]) -> dict:

    comparison = compare_seed(settings, data, trainers)
    states = {t: read_state(trainer_paths(settings, data, t)) for t in trainers}
    results = results_dict(settings, data, comparison, manifest, states)
    markdown = results_markdown(results, markdown_table(comparison))
    if len(settings.seeds) > 1:
        per_seed = {settings.seed: foreground_means(comparison)}
        per_seed_cases = {settings.seed: foreground_per_case(comparison)}
        for seed in settings.seeds[1:]:
            seed_comparison = compare_seed(settings, data, trainers, seed)
            per_seed[seed] = foreground_means(seed_comparison)
            per_seed_cases[seed] = foreground_per_case(seed_comparison)
        results["seeds"] = settings.seeds
        results["foreground_mean_per_seed"] = {str(k): v for k, v in per_seed.items()}
        if STOCK in trainers:
            results["paired_over_seeds"] = paired_over_seeds(per_seed)
            results["paired_intervals"] = paired_intervals(per_seed_cases)
            results["goal"] = goal_verdict(settings.goal, {STOCK: results["paired_intervals"]})
            table = paired_table(per_seed, results["paired_over_seeds"])
            table += "\n\nPaired 95 % intervals (runs first, then cases):\n\n" + intervals_table(
                results["paired_intervals"], settings.seeds, len(comparison.cases)
            )
            if settings.goal is not None:
                table += "\n\n" + (
                    goal_text(results["goal"]) if results["goal"] is not None else GOAL_NOT_EVALUATED
                )
        else:
            table = "(no paired ratios: nnUNetTrainer is not among the finished trainers)"
        markdown += (
            f"\n## All seeds {settings.seeds}: foreground means over the test cases, paired by seed\n\n"
            f"The tables above are seed {settings.seed}'s.\n\n{table}\n"
        )
    with_modes = [t for t in trainers if all(chosen(settings, data, t, seed) for seed in settings.seeds)]
    if STOCK in with_modes:
        markdown += "\n" + modes_section(settings, data, with_modes, results)
    (settings.out / "results.json").write_text(json.dumps(results, indent=2))
    (settings.out / "results.md").write_text(markdown)
    note(f"wrote {settings.out / 'results.json'}")
    note(f"wrote {settings.out / 'results.md'}")
    try:
        comparison_violins(comparison, settings.out / "results.png")
        note(f"wrote {settings.out / 'results.png'}")
    except Exception as error:  # a missing plotting backend must not lose the tables
        note(f"no violin plot: {error!r}")
    try:
        curves = {trainer: entry["training_curves"] for trainer, entry in results["trainers"].items()}
        training_curves_plot(curves, settings.out / "training_curves.png")
        note(f"wrote {settings.out / 'training_curves.png'}")
    except Exception as error:
        note(f"no training-curve plot: {error!r}")
    return results
