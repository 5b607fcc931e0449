"""The ``nnunet-sdm`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_trainers_path(args: argparse.Namespace) -> int:
    from nnunet_sdm import trainers_path

    print(trainers_path())
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from nnunet_sdm.synth import make_synthetic_dataset

    info = make_synthetic_dataset(
        args.out_dir,
        dataset_id=args.dataset_id,
        num_training=args.num_training,
        num_test=args.num_test,
        seed=args.seed,
    )
    print(f"wrote {info['folder']}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_sdm.demo import run_demo

    run_demo(Path(args.workdir), epochs=args.epochs, iterations=args.iterations, device=args.device)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from nnunet_sdm.runner import Budget, train_with_budget

    folder = train_with_budget(
        args.dataset,
        args.configuration,
        args.fold,
        args.tr,
        Budget(args.epochs, args.iterations, args.val_iterations),
        plans_identifier=args.p,
        device=torch.device(args.device) if args.device else None,
        pretrained_weights=args.pretrained_weights,
        continue_training=args.c,
    )
    print(f"trained: {folder}")
    return 0


def _cmd_plans_apply(args: argparse.Namespace) -> int:
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_sdm.plans import bundled_override, write_plans

    override = Path(args.override)
    if not override.is_file():
        override = bundled_override(args.override)
    folder = Path(str(nnUNet_preprocessed)) / maybe_convert_to_dataset_name(args.dataset)
    target = write_plans(folder, override, args.name, args.configuration)
    print(f"wrote {target}; use -p {args.name}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from nnunet_sdm.evaluation import evaluate_folders, labels_from_dataset_json, write_summary

    labels = args.labels or labels_from_dataset_json(args.dataset_json, args.gt_dir)
    summary = evaluate_folders(
        args.gt_dir, args.pred_dir, labels, tolerances=tuple(args.tolerance), num_workers=args.np
    )
    out = Path(args.o or Path(args.pred_dir) / "summary_surface.json")
    write_summary(summary, out, out.with_suffix(".csv"))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-sdm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("trainers-path", help="print the folder to export as nnUNet_extTrainer")
    p.set_defaults(func=_cmd_trainers_path)

    p = sub.add_parser("synth", help="write a small synthetic nnU-Net raw dataset")
    p.add_argument("out_dir")
    p.add_argument("--dataset-id", type=int, default=990)
    p.add_argument("--num-training", type=int, default=12)
    p.add_argument("--num-test", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("demo", help="synthetic data -> plan -> train SDM and stock -> predict -> evaluate")
    p.add_argument("workdir", nargs="?", default="nnunet_sdm_demo")
    p.add_argument("--epochs", type=int, default=None, help="default: a CPU-sized budget")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per epoch")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("train", help="nnUNetv2_train with an explicit budget (any trainer, stock included)")
    p.add_argument("dataset")
    p.add_argument("configuration")
    p.add_argument("fold")
    p.add_argument("-tr", default="nnUNetTrainerSDM")
    p.add_argument("-p", default="nnUNetPlans")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--val-iterations", type=int, default=5)
    p.add_argument("-device", default=None)
    p.add_argument("-pretrained_weights", default=None)
    p.add_argument("--c", action="store_true", help="continue from the latest checkpoint")
    p.set_defaults(func=_cmd_train)

    plans = sub.add_parser("plans", help="plans overrides").add_subparsers(
        dest="plans_command", required=True
    )
    p = plans.add_parser("apply", help="write a new plans file from an override JSON")
    p.add_argument("dataset")
    p.add_argument("override", help="override JSON file, or the name of a bundled one (cpu_small, ...)")
    p.add_argument("--name", required=True, help="the new plans identifier (for -p / -plans_name)")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.set_defaults(func=_cmd_plans_apply)

    p = sub.add_parser("evaluate", help="Dice, HD95, ASSD and NSD per case and class")
    p.add_argument("gt_dir")
    p.add_argument("pred_dir")
    p.add_argument("-o", default=None, help="summary JSON (a CSV is written beside it)")
    p.add_argument("--tolerance", type=float, nargs="+", default=[1.0, 2.0], help="NSD tolerances in mm")
    p.add_argument("--labels", type=int, nargs="+", default=None)
    p.add_argument("--dataset-json", default=None)
    p.add_argument("-np", type=int, default=2)
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
