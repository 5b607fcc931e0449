"""The ``nnunet-sdm`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: --scoring of evaluate and flare run: nnunet_sdm.evaluation.challenge.CHALLENGE_SCORINGS (tested), written
#: here so that building the parser imports no evaluation code
SCORINGS = ("flare22", "flare23", "flare24")


def _cmd_trainers_path(args: argparse.Namespace) -> int:
    from nnunet_sdm import trainers_path

    print(trainers_path())
    return 0


#: (regions, ignore label) -> default dataset id and name of ``nnunet-sdm synth``
SYNTH_KINDS = {
    (False, False): (990, "SDMSynth"),
    (True, False): (994, "SDMRegions"),
    (False, True): (995, "SDMSparse"),
    (True, True): (996, "SDMRegionsSparse"),
}


def _cmd_synth(args: argparse.Namespace) -> int:
    from nnunet_sdm.synth import make_synthetic_dataset

    kind = (args.regions, args.ignore_label)
    default_id, default_name = SYNTH_KINDS[kind]
    info = make_synthetic_dataset(
        args.out_dir,
        dataset_id=args.dataset_id if args.dataset_id is not None else default_id,
        name=args.name or default_name,
        num_training=args.num_training,
        num_test=args.num_test,
        seed=args.seed,
        regions=args.regions,
        ignore_label=args.ignore_label,
        labelled_every=args.labelled_every,
        num_unlabeled=args.unlabeled,
    )
    print(f"wrote {info['folder']}")
    return 0


def _cmd_preprocess_unlabeled(args: argparse.Namespace) -> int:
    from nnunet_sdm.unlabeled import preprocess_unlabeled

    folders = preprocess_unlabeled(
        args.d,
        args.c,
        plans_identifier=args.p,
        num_processes=args.np,
        allow_other_spacing=args.allow_other_spacing,
    )
    for configuration, folder in folders.items():
        print(f"{configuration}: {folder}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_sdm.demo import run_demo

    run_demo(Path(args.workdir), epochs=args.epochs, iterations=args.iterations, device=args.device)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from nnunet_sdm.runner import Budget, hash_seed_fixed, seeded_environment, train_with_budget

    if args.seed is not None and not hash_seed_fixed(args.seed):
        # Python's string hash is fixed at start-up only: run this command again with it seeded
        sys.stdout.flush()
        command = [sys.executable, "-m", "nnunet_sdm.cli", *args.argv]
        os.execve(sys.executable, command, seeded_environment(dict(os.environ), args.seed))

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
        warm_start=args.warm_start,
        seed=args.seed,
    )
    print(f"trained: {folder}")
    return 0


def _cmd_plans_apply(args: argparse.Namespace) -> int:
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_sdm.plans import PlansOverrideError, bundled_override, needs_preprocessing, write_plans

    override = Path(args.override)
    if not override.is_file():
        if args.override.endswith(".json") or "/" in args.override:
            raise PlansOverrideError(f"{override}: no such override file")
        try:
            override = bundled_override(args.override)
        except FileNotFoundError as error:
            raise PlansOverrideError(str(error)) from None
    folder = Path(str(nnUNet_preprocessed)) / maybe_convert_to_dataset_name(args.dataset)
    try:
        target = write_plans(folder, override, args.name, args.configuration, args.source_plans)
    except FileNotFoundError as error:  # no plans to start from yet
        raise PlansOverrideError(str(error)) from None
    print(f"wrote {target}")
    c, d = args.configuration, args.dataset
    if needs_preprocessing(folder, args.name, c):
        print(f"no preprocessed data yet: run nnUNetv2_preprocess -d {d} -c {c} -plans_name {args.name}")
    else:
        print("preprocessed data found: no preprocessing needed")
    print(f"train: nnUNetv2_train {d} {c} FOLD -tr TRAINER -p {args.name}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from nnunet_sdm.dataset_json import find_dataset_json, ignore_label
    from nnunet_sdm.evaluation import SUMMARY_NAME, evaluate_folders, resolve_labels, write_summary
    from nnunet_sdm.evaluation.challenge import get_scoring

    if args.scoring is not None and not args.labels:
        labels, source = get_scoring(args.scoring).labels, f"{args.scoring}'s organs"
    else:
        labels, source = resolve_labels(args.labels, args.dataset_json, args.gt_dir)
    found = args.dataset_json or find_dataset_json(args.gt_dir)
    ignore = ignore_label(found) if found is not None else None
    print(
        f"labels {labels} (from {source})"
        + (f"; ignore label {ignore} left out" if ignore is not None else "")
    )
    summary = evaluate_folders(
        args.gt_dir,
        args.pred_dir,
        labels,
        tolerances=tuple(args.tolerance),
        num_workers=args.np,
        missing_predictions=args.missing_predictions,
        scoring=args.scoring,
        ignore_label=ignore,
    )
    unpredicted = summary["references_without_prediction"]
    if unpredicted:
        how = "left out" if args.missing_predictions == "skip" else "scored as empty predictions"
        print(
            f"warning: {len(unpredicted)} reference(s) in {args.gt_dir} have no prediction and are {how}: "
            f"{unpredicted}",
            file=sys.stderr,
        )
    out = Path(args.o or Path(args.pred_dir) / SUMMARY_NAME)
    write_summary(summary, out, out.with_suffix(".csv"))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from nnunet_sdm.evaluation import resolve_labels
    from nnunet_sdm.evaluation.compare import compare_folders, write_comparison

    labels, source = resolve_labels(args.labels, args.dataset_json, args.gt)
    print(f"labels {labels} (from {source})")
    comparison = compare_folders(
        args.pred_dirs,
        args.gt,
        labels,
        tolerances=tuple(args.tolerance),
        names=args.names,
        num_workers=args.np,
        dataset_json=args.dataset_json,
    )
    md, png = write_comparison(comparison, args.o)
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


def _cmd_sdm_guided(args: argparse.Namespace) -> int:
    from nnunet_sdm.inference.sdm_guided import apply_to_folder

    removals = apply_to_folder(args.pred_dir, args.o, args.depth_mm)
    total = sum(sum(per_class.values()) for per_class in removals.values())
    print(f"wrote {len(removals)} case(s) to {args.o}; {total} component(s) removed (see sdm_guided.json)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from nnunet_sdm.inference.predict import run_predict

    return run_predict(args)


def _cmd_plot_sdm(args: argparse.Namespace) -> int:
    from nnunet_sdm.plots import plot_sdm_files

    out, index = plot_sdm_files(
        args.image,
        args.label,
        args.sdm,
        args.o,
        slice_index=args.slice,
        label=args.cls,
        axis=args.axis,
        levels=args.levels,
    )
    print(f"wrote {out} (slice {index} along axis {args.axis})")
    return 0


def _cmd_flare_package(args: argparse.Namespace) -> int:
    from nnunet_sdm.flare import package_submission

    out = package_submission(
        args.d,
        args.c,
        args.tr,
        args.p,
        args.f,
        args.o,
        checkpoint=args.chk,
        base_image=args.base_image,
        sdm_guided_depth_mm=args.sdm_guided_depth,
    )
    print(f"wrote {out}: sh {out / 'predict.sh'} INPUT OUTPUT (see {out / 'README.md'})")
    return 0


def _cmd_flare_run(args: argparse.Namespace) -> int:
    from nnunet_sdm.flare import run_submission, summarise

    csv_path, rows = run_submission(
        args.submission,
        args.input,
        args.output,
        args.gt,
        args.csv,
        args.device,
        args.tolerance,
        scoring=args.scoring,
    )
    for key, value in summarise(rows).items():
        print(f"mean {key}: {value:.4g}")
    print(f"wrote {csv_path} ({len(rows)} cases)")
    return 0


def _add_trainers_path_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm trainers-path``."""
    p = sub.add_parser("trainers-path", help="print the folder to export as nnUNet_extTrainer")
    p.set_defaults(func=_cmd_trainers_path)


def _add_synth_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm synth``."""
    p = sub.add_parser("synth", help="write a small synthetic nnU-Net raw dataset")
    p.add_argument("out_dir")
    p.add_argument(
        "--dataset-id", type=int, default=None, help="default: 990 (994 regions, 995 sparse, 996 both)"
    )
    p.add_argument(
        "--name", default=None, help="default: SDMSynth, SDMRegions, SDMSparse or SDMRegionsSparse"
    )
    p.add_argument("--num-training", type=int, default=12)
    p.add_argument("--num-test", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--regions",
        action="store_true",
        help="BraTS-like nested tumour regions (dataset.json regions_class_order)",
    )
    p.add_argument(
        "--ignore-label",
        action="store_true",
        help="sparse annotation: training labels on every --labelled-every th slice, the rest nnU-Net's ignore label",
    )
    p.add_argument("--labelled-every", type=int, default=3)
    p.add_argument(
        "--unlabeled",
        type=int,
        default=0,
        metavar="N",
        help="also N cases without labels in imagesUnlabeled/ (semi-supervised training)",
    )
    p.set_defaults(func=_cmd_synth)


def _add_preprocess_unlabeled_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm preprocess-unlabeled``."""
    p = sub.add_parser(
        "preprocess-unlabeled",
        help="preprocess the dataset's imagesUnlabeled/ with its plans (semi-supervised training)",
        description="Preprocesses nnUNet_raw/DatasetXXX/imagesUnlabeled/ ({case}_{XXXX}{file_ending}, as imagesTr, "
        "no labels) with the plans' own preprocessor into nnUNet_preprocessed/DatasetXXX/<data identifier>_unlabeled/ "
        "for nnUNetTrainerSDM_SemiSupervised. Plan and preprocess the labeled cases first "
        "(nnUNetv2_plan_and_preprocess).",
    )
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations (default 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-np", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--allow-other-spacing",
        action="store_true",
        help="accept images whose spacing is more than 2x outside the labeled cases' range",
    )
    p.set_defaults(func=_cmd_preprocess_unlabeled)


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm demo``."""
    p = sub.add_parser("demo", help="synthetic data -> plan -> train SDM and stock -> predict -> evaluate")
    p.add_argument("workdir", nargs="?", default="nnunet_sdm_demo")
    p.add_argument("--epochs", type=int, default=None, help="default: a CPU-sized budget")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per epoch")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.set_defaults(func=_cmd_demo)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm train``."""
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
    p.add_argument(
        "--warm-start",
        metavar="CHECKPOINT",
        help="start from all weights of a checkpoint, output layers included (a stock nnUNetTrainer "
        "checkpoint fills the segmentation rows; SDM rows start fresh); optimiser and schedule start anew",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed Python, numpy and torch, the batches (the same cases, patches and augmentation for every "
        "trainer with this seed, with or without augmentation workers) and Python's string hash (the command "
        "restarts itself with PYTHONHASHSEED=SEED); with a fixed thread count a CPU run repeats bit for bit",
    )
    p.set_defaults(func=_cmd_train)


def _add_plans_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm plans``."""
    plans = sub.add_parser("plans", help="plans overrides").add_subparsers(
        dest="plans_command", required=True
    )
    p = plans.add_parser("apply", help="write a new plans file from an override JSON")
    p.add_argument("dataset")
    p.add_argument(
        "override", help="override JSON file, or a bundled one: cpu_small, xue2020_deep_unet, flare21"
    )
    p.add_argument("--name", required=True, help="the new plans identifier (for -p / -plans_name)")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument(
        "--source-plans",
        default="nnUNetPlans",
        help="plans to start from (default nnUNetPlans; a derived plans identifier composes overrides)",
    )
    p.set_defaults(func=_cmd_plans_apply)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="Dice, HD95, ASSD and NSD per case and class",
        description="Evaluates every <case><file ending> of PRED_DIR against the file of the same name in GT_DIR. "
        "Labels: --labels, else the dataset.json given or found in GT_DIR or its parent, else the label values "
        "found in the reference masks (the output says which). --scoring flare22|flare23|flare24 scores DSC and "
        "NSD by that challenge's rules instead (per-organ NSD tolerances, NSD 0 below a DSC threshold, rounding; "
        "labels default to its organs).",
    )
    p.add_argument("gt_dir", help="reference label maps")
    p.add_argument("pred_dir", help="predicted label maps (same file names)")
    p.add_argument(
        "-o",
        default=None,
        help="summary JSON (default PRED_DIR/summary_surface.json; a CSV is written beside it)",
    )
    p.add_argument("--tolerance", type=float, nargs="+", default=[1.0, 2.0], help="NSD tolerances in mm")
    p.add_argument("--labels", type=int, nargs="+", default=None, help="label values to evaluate")
    p.add_argument("--dataset-json", default=None, help="take the labels from this dataset.json")
    p.add_argument("-np", type=int, default=2, help="worker processes")
    p.add_argument(
        "--scoring",
        choices=SCORINGS,
        default=None,
        help="a FLARE challenge's DSC/NSD rules instead of HD95, ASSD and NSD at --tolerance",
    )
    p.add_argument(
        "--missing-predictions",
        choices=("skip", "error", "empty"),  # evaluation.evaluate.MISSING_PREDICTIONS (tested)
        default="skip",
        help="references without a prediction: left out with a warning (skip, as nnU-Net does), an error, "
        "or scored as empty predictions (empty: Dice 0, HD95 = image diagonal, as in a challenge)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm compare``."""
    p = sub.add_parser("compare", help="compare prediction folders: markdown table + violin plots")
    p.add_argument(
        "pred_dirs", nargs="+", help="prediction folders (their summary_surface.json is reused if it matches)"
    )
    p.add_argument("--gt", required=True, help="reference label folder")
    p.add_argument("-o", default="comparison", help="output prefix: writes <o>.md and <o>.png")
    p.add_argument(
        "--labels", type=int, nargs="+", default=None, help="default: dataset.json, else the reference masks"
    )
    p.add_argument("--names", nargs="+", default=None, help="method names (default: the folder names)")
    p.add_argument("--tolerance", type=float, nargs="+", default=[1.0, 2.0], help="NSD tolerances in mm")
    p.add_argument("--dataset-json", default=None)
    p.add_argument("-np", type=int, default=2)
    p.set_defaults(func=_cmd_compare)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm predict``."""
    p = sub.add_parser(
        "predict",
        help="nnUNetv2_predict (same arguments), optionally also writing the predicted SDMs",
        description="nnUNetv2_predict with nnU-Net's own predictor: the same arguments and the same label maps. "
        "--save-sdm also writes <o>/sdm/<case>_sdm<file ending>: one float32 image per case whose last "
        "dimension holds the predicted SDM of each foreground class (in label order; see <o>/sdm/sdm.json), "
        "sliding-window, Gaussian-weighted, mirrored and resampled to the image geometry like the "
        "probabilities. Unit: the network's normalised SDM in [-1, 1], negative inside, 0 on the boundary; for "
        "truncated targets (nnUNetTrainerSDM: truncation_mm in sdm.json) truncation_mm x value is mm where "
        "|value| < 1, for Xue et al.'s per-patch normalisation there is no exact mm.",
    )
    from os import environ

    npp, nps = (int(environ.get(k, 3)) for k in ("nnUNet_npp", "nnUNet_nps"))
    p.add_argument("-i", required=True, help="input folder (files <case>_0000<file ending>, ...)")
    p.add_argument("-o", required=True, help="output folder")
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument(
        "-tr", default="nnUNetTrainer", help="trainer (default nnUNetTrainer, as nnUNetv2_predict)"
    )
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0 1 2 3 4)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (fraction of the patch)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring")
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--save_probabilities", action="store_true", help="also write <case>.npz/.pkl probabilities"
    )
    p.add_argument("--continue_prediction", action="store_true", help="skip cases already predicted")
    p.add_argument("-chk", default="checkpoint_final.pth")
    p.add_argument("-npp", type=int, default=npp, help="preprocessing processes (nnUNet_npp, default 3)")
    p.add_argument("-nps", type=int, default=nps, help="export processes (nnUNet_nps, default 3)")
    p.add_argument("-prev_stage_predictions", default=None)
    p.add_argument("-num_parts", type=int, default=1)
    p.add_argument("-part_id", type=int, default=0)
    p.add_argument("-device", default="cuda", help="cuda, cpu or mps")
    p.add_argument("--disable_progress_bar", action="store_true")
    p.add_argument("--not_on_device", action="store_true")
    p.add_argument(
        "--save-sdm",
        "--save_sdm",
        dest="save_sdm",
        action="store_true",
        help="also write the predicted normalised SDMs (needs a trainer with an SDM head; format: sdm/sdm.json)",
    )
    p.add_argument(
        "--sdm-guided-depth",
        type=float,
        default=None,
        metavar="MM",
        help="SDM-guided post-processing (nnUNetTrainerSDM and variants, label datasets): remove each predicted "
        "component whose predicted SDM never reaches MM inside it. nnU-Net's prediction and the SDMs are kept "
        "in <o>/unfiltered, the filtered label maps go to <o> (record: <o>/sdm_guided.json). Choose MM on "
        "validation folds (docs/accuracy.md); 0 removes only components the SDM head places wholly outside",
    )
    p.set_defaults(func=_cmd_predict)


def _add_sdm_guided_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm sdm-guided``."""
    p = sub.add_parser(
        "sdm-guided",
        help="remove predicted components that the SDM head places outside (needs predict --save-sdm)",
        description="Per class, remove every predicted connected component whose predicted SDM never gets "
        "DEPTH_MM inside it (nnunet_sdm.inference.sdm_guided); choose DEPTH_MM on validation folds.",
    )
    p.add_argument("pred_dir", help="a folder written by `nnunet-sdm predict --save-sdm` (label maps + sdm/)")
    p.add_argument("-o", required=True, help="output folder for the filtered label maps")
    p.add_argument(
        "--depth-mm", type=float, default=0.0, help="how deep inside (mm) a kept component reaches"
    )
    p.set_defaults(func=_cmd_sdm_guided)


def _add_plot_sdm_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm plot-sdm``."""
    p = sub.add_parser("plot-sdm", help="a slice with the reference contour and the predicted SDM level sets")
    p.add_argument("image", help="the image (e.g. imagesTs/<case>_0000.nii.gz)")
    p.add_argument("label", help="its reference label map")
    p.add_argument("sdm", help="the predicted SDM (<pred>/sdm/<case>_sdm.nii.gz from predict --save-sdm)")
    p.add_argument("-o", required=True, help="output PNG")
    p.add_argument("--slice", type=int, default=None, help="slice index (default: largest area of the class)")
    p.add_argument("--class", dest="cls", type=int, default=None, help="label value (default: the first)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=0, help="numpy axis to slice (0: axial)")
    p.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0.0, 0.1, 0.2, 0.3],
        help="SDM levels to draw (default 0 0.1 0.2 0.3: red, orange, yellow, green)",
    )
    p.set_defaults(func=_cmd_plot_sdm)


def _add_flare_parser(sub: argparse._SubParsersAction) -> None:
    """``nnunet-sdm flare``."""
    flare = sub.add_parser("flare", help="FLARE submissions: package a model, run and time it")
    flare = flare.add_subparsers(dest="flare_command", required=True)
    p = flare.add_parser(
        "package",
        help="a submission folder: the model, predict.sh, Dockerfile, README",
        description="Writes OUT/ with nnU-Net's model folder (only the given folds' checkpoint), predict.sh "
        "(sh predict.sh IN OUT: <case>_0000.nii.gz -> <case>.nii.gz with nnUNetv2_predict_from_modelfolder; "
        "sets nnUNet_extTrainer itself; no network), a Dockerfile installing nnU-Net and this package "
        "(copied to OUT/nnunet_sdm_src), submission.json and a README.",
    )
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-tr", required=True, help="trainer")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0 1 2 3 4)")
    p.add_argument("-o", required=True, help="output folder (new or empty)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint (default checkpoint_final.pth)")
    p.add_argument("--base-image", default=None, help="Docker base image (default: see the Dockerfile)")
    p.add_argument(
        "--sdm-guided-depth",
        type=float,
        default=None,
        metavar="MM",
        help="predict.sh applies SDM-guided post-processing with this depth (nnunet-sdm predict "
        "--sdm-guided-depth; nnUNetTrainerSDM and variants); default: off, nnU-Net's prediction",
    )
    p.set_defaults(func=_cmd_flare_package)
    p = flare.add_parser(
        "run",
        help="run predict.sh case by case: CSV of seconds, peak memory, DSC/NSD",
        description="Runs SUBMISSION/predict.sh once per case (a temporary input folder per case) and writes "
        "a CSV (default OUT/flare_run.csv): seconds per case including start-up and model loading; "
        "peak_rss_mb, the peak RSS of the largest process predict.sh started (getrusage RUSAGE_CHILDREN in a "
        "fresh wrapper per case); peak_gpu_mb, torch.cuda.max_memory_allocated() of the processes that used "
        "CUDA (empty on CPU); with --gt, DSC_<label> and NSD_<label> (tolerance --tolerance mm).",
    )
    p.add_argument("submission", help="folder made by `nnunet-sdm flare package`")
    p.add_argument("input", help="input folder with <case>_0000.nii.gz files")
    p.add_argument("output", help="output folder for <case>.nii.gz")
    p.add_argument("--gt", default=None, help="reference label folder (<case>.nii.gz) for DSC and NSD")
    p.add_argument("--csv", default=None, help="CSV path (default OUTPUT/flare_run.csv; log beside it)")
    p.add_argument("--device", default=None, help="predict.sh's DEVICE (default: cuda if available)")
    p.add_argument("--tolerance", type=float, default=1.0, help="NSD tolerance in mm (FLARE21: 1)")
    p.add_argument(
        "--scoring",
        choices=SCORINGS,
        default=None,
        help="with --gt: that challenge's DSC/NSD rules (per-organ tolerances) instead of --tolerance",
    )
    p.set_defaults(func=_cmd_flare_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-sdm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_trainers_path_parser(sub)
    _add_synth_parser(sub)
    _add_preprocess_unlabeled_parser(sub)
    _add_demo_parser(sub)
    _add_train_parser(sub)
    _add_plans_parser(sub)
    _add_evaluate_parser(sub)
    _add_compare_parser(sub)
    _add_predict_parser(sub)
    _add_sdm_guided_parser(sub)
    _add_plot_sdm_parser(sub)
    _add_flare_parser(sub)
    return parser


def _is_input_error(error: Exception) -> bool:
    """Errors that say what is wrong with the user's input, not a bug: shown as one line, exit 2."""
    from nnunet_sdm.flare import SubmissionError
    from nnunet_sdm.inference.predict import SDMExportError
    from nnunet_sdm.inference.sdm_guided import SDMGuidedError
    from nnunet_sdm.plans import PlansOverrideError
    from nnunet_sdm.unlabeled import UnlabeledDataError

    return isinstance(
        error, (PlansOverrideError, SDMExportError, SubmissionError, SDMGuidedError, UnlabeledDataError)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a command that must restart itself (train --seed) runs these again
    try:
        return args.func(args)
    except Exception as error:
        if not _is_input_error(error):
            raise
        command = " ".join(
            filter(
                None,
                (args.command, getattr(args, "plans_command", None), getattr(args, "flare_command", None)),
            )
        )
        print(f"nnunet-sdm {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
