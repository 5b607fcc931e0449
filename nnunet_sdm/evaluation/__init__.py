"""Surface metrics (Dice, HD95, ASSD, NSD) with the FLARE / DeepMind ``surface-distance`` definitions;
folder evaluation and summaries. Comparisons of prediction folders (tables and violin plots) are in
:mod:`nnunet_sdm.evaluation.compare`, which builds on this and on :mod:`nnunet_sdm.plots`."""

from nnunet_sdm.evaluation.evaluate import (
    SUMMARY_NAME,
    evaluate_case,
    evaluate_folders,
    labels_from_dataset_json,
    labels_from_masks,
    resolve_labels,
    write_summary,
)
from nnunet_sdm.evaluation.surface import (
    SurfaceDistances,
    assd,
    compute_average_surface_distance,
    compute_robust_hausdorff,
    compute_surface_dice_at_tolerance,
    compute_surface_distances,
    dice,
    hd95,
    image_diagonal_mm,
    nsd,
    nsd_key,
    surface_metrics,
    surfel_area_table,
)

__all__ = [
    "SUMMARY_NAME",
    "labels_from_masks",
    "resolve_labels",
    "SurfaceDistances",
    "assd",
    "compute_average_surface_distance",
    "compute_robust_hausdorff",
    "compute_surface_dice_at_tolerance",
    "compute_surface_distances",
    "dice",
    "evaluate_case",
    "evaluate_folders",
    "hd95",
    "image_diagonal_mm",
    "labels_from_dataset_json",
    "nsd",
    "nsd_key",
    "surface_metrics",
    "surfel_area_table",
    "write_summary",
]
