"""Surface metrics (Dice, HD95, ASSD, NSD) with the FLARE / DeepMind ``surface-distance`` definitions."""

from nnunet_sdm.evaluation.evaluate import (
    evaluate_case,
    evaluate_folders,
    labels_from_dataset_json,
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
