"""The benchmark's main: the five steps in order (see the package docstring), resumable."""

from __future__ import annotations

import sys
import time

from nnunet_sdm.workflow import nnunet_environment

from .data import check_manifest, make_manifest, make_split, prepare_data, write_split
from .inference import run_modes
from .report import compare_and_write
from .settings import STARTED, STOCK, BenchmarkError, Settings, note, parse_args, step
from .steps import plan, pretrain, run_trainer, train_one


def run(settings: Settings) -> int:
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
    preprocessed = plan(settings, data, env)
    path = write_split(preprocessed, split)
    fold = split[settings.fold]
    note(f"split: {path} (fold {settings.fold}: {len(fold['train'])} train, {len(fold['val'])} val)")

    warm_start = None
    if settings.warm_start is not None:
        step(f"3/5 warm start: one stock pre-training {settings.warm_start['budget']} (seed {settings.seed})")
        warm_start = pretrain(settings, data, env)
    else:
        step("3/5 warm start: none, every trainer starts from scratch")

    runs = [(seed, trainer) for seed in settings.seeds for trainer in settings.trainers]
    failed: dict[str, str] = {}

    def one(i: int, seed: int, trainer: str) -> None:
        try:
            run_trainer(
                settings,
                data,
                trainer,
                env,
                f"4/5 [{i + 1}/{len(runs)}]",
                seed=seed,
                warm_start=warm_start,
            )
            if settings.inference_modes:
                run_modes(settings, data, trainer, env, f"4/5 [{i + 1}/{len(runs)}]", fold["val"], seed=seed)
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
    print(f"done in {time.time() - STARTED:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_train_one"]:
        return train_one(argv[1])
    settings = parse_args(argv)
    try:
        return run(settings)
    except BenchmarkError as error:
        print(f"benchmarks/accuracy.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
