"""Surface metrics (Dice, HD95, ASSD, NSD) with the FLARE / DeepMind ``surface-distance`` definitions;
folder evaluation, summaries and comparisons of prediction folders."""

from nnunet_sdm.evaluation.compare import (
    Comparison,
    compare_folders,
    load_or_evaluate,
    markdown_table,
    write_comparison,
)
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
    "Comparison",
    "SurfaceDistances",
    "assd",
    "compare_folders",
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
    "load_or_evaluate",
    "markdown_table",
    "nsd",
    "nsd_key",
    "surface_metrics",
    "surfel_area_table",
    "write_comparison",
    "write_summary",
]
