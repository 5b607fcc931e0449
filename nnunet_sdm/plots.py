"""Every figure of the package: violin plots comparing methods, the loss terms and validation curves of
trainings, and SDM level sets on an image slice (Xue et al. 2020, Fig. 4).

matplotlib is imported inside the functions, with the non-interactive Agg backend, so importing this
module is cheap and works without a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_sdm.evaluation.evaluate import higher_is_better, metric_label
from nnunet_sdm.sdm_format import read_sdm

__all__ = [
    "comparison_violins",
    "loss_terms_plot",
    "training_curves_plot",
    "plot_sdm_slice",
    "plot_sdm_files",
    "SDM_LEVELS",
    "SDM_LEVEL_COLOURS",
]

#: Xue et al. 2020, Fig. 4: predicted SDM level sets 0, 0.1, 0.2, 0.3 in red, orange, yellow, green
SDM_LEVELS = (0.0, 0.1, 0.2, 0.3)
SDM_LEVEL_COLOURS = ("red", "orange", "yellow", "limegreen")
GT_COLOUR = "deepskyblue"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out_png: str | Path, dpi: int, **options) -> Path:
    """Write the figure (its folder made if needed) and free it."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi, **options)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------------------------------
# comparison violins
# ----------------------------------------------------------------------------------------------------
def comparison_violins(comparison, out_png: str | Path, dpi: int = 150) -> Path:
    """One panel per metric; in each, one group per class and one violin per method (with the cases as dots).

    ``comparison`` is a :class:`nnunet_sdm.evaluation.compare.Comparison`.
    """
    plt = _pyplot()
    methods, labels, metrics = comparison.methods, comparison.labels, comparison.metrics
    n_methods = len(methods)
    colours = plt.get_cmap("tab10" if n_methods <= 10 else "tab20").colors
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    group_width = max(3.0, 0.9 * n_methods + 0.8)
    fig_width = min(22.0, max(10.0, ncols * (1.2 + 0.55 * group_width * len(labels) / 1.6)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(fig_width, 3.9 * nrows + 0.9), squeeze=False)
    width = 0.8 / n_methods
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes.flat, metrics):
        for j, method in enumerate(methods):
            positions, datasets = [], []
            for i, label in enumerate(labels):
                x = comparison.values[method][label][metric]
                x = x[np.isfinite(x)]
                if x.size == 0:
                    continue
                pos = i + (j - (n_methods - 1) / 2) * width
                if x.size > 1 and np.ptp(x) > 1e-12 * max(1.0, float(np.abs(x).max())):
                    positions.append(pos)
                    datasets.append(x)
                else:  # no spread: a bar in the method's colour instead of a violin
                    ax.hlines(
                        x[0],
                        pos - 0.4 * width,
                        pos + 0.4 * width,
                        color=colours[j % len(colours)],
                        linewidth=4,
                    )
                # the cases themselves (and the only mark if a KDE is impossible)
                jitter = rng.uniform(-0.18, 0.18, x.size) * width
                ax.scatter(pos + jitter, x, s=9, color="black", alpha=0.55, linewidths=0, zorder=3)
                ax.scatter(
                    [pos],
                    [np.mean(x)],
                    marker="D",
                    s=30,
                    color="white",
                    edgecolors="black",
                    linewidths=1.0,
                    zorder=4,
                )
            if datasets:
                parts = ax.violinplot(datasets, positions=positions, widths=0.9 * width, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(colours[j % len(colours)])
                    body.set_edgecolor("black")
                    body.set_linewidth(0.6)
                    body.set_alpha(0.6)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([comparison.class_name(label) for label in labels], fontsize=9)
        ax.set_xlim(-0.55, len(labels) - 0.45)
        ax.set_title(
            metric_label(metric)
            + ("  (higher is better)" if higher_is_better(metric) else "  (lower is better)"),
            fontsize=10,
        )
        if higher_is_better(metric):
            low = min(
                (float(np.nanmin(comparison.values[m][c][metric])) for m in methods for c in labels),
                default=0.0,
            )
            ax.set_ylim(max(-0.02, min(low - 0.05, 0.9)), 1.02)
        ax.grid(axis="y", alpha=0.3)
        for i in range(1, len(labels)):
            ax.axvline(i - 0.5, color="grey", linewidth=0.5, alpha=0.5)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles = [
        plt.Rectangle((0, 0), 1, 1, facecolor=colours[j % len(colours)], alpha=0.6, edgecolor="black")
        for j in range(n_methods)
    ]
    fig.legend(
        handles,
        methods,
        loc="upper center",
        ncol=min(n_methods, 4),
        frameon=False,
        fontsize=10,
        bbox_to_anchor=(0.5, 1.0),
    )
    fig.text(
        0.5,
        0.005,
        f"{len(comparison.cases)} cases; dots: cases, white diamond: mean; a bar where all cases are equal",
        ha="center",
        fontsize=8,
        color="dimgrey",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1 - 0.55 / (3.9 * nrows + 0.9)))
    return _save(plt, fig, out_png, dpi)


# ----------------------------------------------------------------------------------------------------
# training curves
# ----------------------------------------------------------------------------------------------------
def loss_terms_plot(history: dict[str, dict[str, float]], out_png: str | Path, dpi: int = 80) -> Path | None:
    """One panel per loss term (train and validation per epoch), then one panel with the gradient norm of
    every term and one with their shares (``grad_norm/*``, ``grad_share/*``), beside nnU-Net's progress.png."""
    plt = _pyplot()
    names = sorted({key.split("/", 1)[1] for key in history})
    terms = [n for n in names if not n.startswith("grad_")]
    groups = [g for g in ("grad_norm", "grad_share") if any(n.startswith(g + "/") for n in names)]
    if not names:
        return None
    panels = len(terms) + len(groups)
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.6 * panels), squeeze=False)

    def curve(key: str) -> tuple[list[int], list[float]]:
        values = history.get(key, {})
        epochs = sorted(int(e) for e in values)
        return epochs, [values[str(e)] for e in epochs]

    for ax, term in zip(axes[:, 0], terms):
        for phase, style in (("train", "-"), ("val", "--")):
            ax.plot(*curve(f"{phase}/{term}"), style, marker=".", label=phase)
        ax.set_ylabel(term)
        ax.legend(loc="upper right")
    for ax, group in zip(axes[len(terms) :, 0], groups):
        for name in (n for n in names if n.startswith(group + "/") and n != "grad_norm/clipped"):
            ax.plot(*curve(f"train/{name}"), "-", marker=".", label=name.split("/", 1)[1])
        ax.set_ylabel(group + " (first batch)")
        ax.legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle("loss terms (unweighted, deep-supervision weighted over scales)")
    fig.tight_layout()
    return _save(plt, fig, out_png, dpi)


def training_curves_plot(
    curves: dict[str, dict[str, list[float]]], out_png: str | Path, dpi: int = 150
) -> Path:
    """Validation pseudo Dice per epoch, one colour per training.

    ``curves`` maps a name to nnU-Net's logger lists (``checkpoint["logging"]``): ``mean_fg_dice`` is drawn
    thin, ``ema_fg_dice`` (nnU-Net's EMA of it) thick and labelled.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, logged) in enumerate(curves.items()):
        colour = f"C{i}"
        if logged.get("mean_fg_dice"):
            ax.plot(logged["mean_fg_dice"], color=colour, alpha=0.35, linewidth=1)
        if logged.get("ema_fg_dice"):
            ax.plot(logged["ema_fg_dice"], color=colour, linewidth=2, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo Dice (mean over classes)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("thick: nnU-Net's EMA; thin: per epoch", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, out_png, dpi)


# ----------------------------------------------------------------------------------------------------
# SDM level sets
# ----------------------------------------------------------------------------------------------------
def plot_sdm_slice(
    image: np.ndarray,
    label_map: np.ndarray,
    sdm: np.ndarray,
    spacing: Sequence[float],
    label: int,
    out_png: str | Path,
    slice_index: int | None = None,
    axis: int = 0,
    levels: Sequence[float] = SDM_LEVELS,
    colours: Sequence[str] = SDM_LEVEL_COLOURS,
    title: str | None = None,
    zoom: bool = True,
    dpi: int = 150,
) -> tuple[Path, int]:
    """A slice of ``image`` (grey) with the reference contour of ``label`` and the SDM level sets.

    Arrays are 3D in the same (numpy) axis order; ``spacing`` in mm along those axes gives the aspect
    ratio. ``slice_index`` along ``axis`` defaults to the slice with the largest reference area of the
    class (or, if the class is absent, the smallest SDM). ``zoom`` crops the view to the region around
    the structure and the outermost level set. Returns the PNG path and the slice index.
    """
    plt = _pyplot()
    image, label_map, sdm = (np.asarray(a) for a in (image, label_map, sdm))
    if not image.shape == label_map.shape == sdm.shape:
        raise ValueError(f"image {image.shape}, label {label_map.shape} and SDM {sdm.shape} differ in shape")
    if image.ndim != 3:
        raise ValueError(f"expected 3D arrays, got shape {image.shape}")
    if len(levels) != len(colours):
        raise ValueError(f"{len(levels)} levels but {len(colours)} colours")
    mask = label_map == label
    other = tuple(a for a in range(3) if a != axis)
    if slice_index is None:
        area = mask.sum(axis=other)
        slice_index = int(np.argmax(area)) if area.any() else int(np.argmin(sdm.min(axis=other)))
    if not 0 <= slice_index < image.shape[axis]:
        raise ValueError(f"slice {slice_index} is outside 0..{image.shape[axis] - 1} along axis {axis}")
    take = [slice(None)] * 3
    take[axis] = slice_index
    img, gt, dist = image[tuple(take)], mask[tuple(take)], sdm[tuple(take)]
    s_row, s_col = (float(spacing[a]) for a in other)
    extent = (0, img.shape[1] * s_col, img.shape[0] * s_row, 0)  # mm, voxel edges

    # the view (voxel index window), then a figure of its aspect ratio
    r0, r1, c0, c1 = 0, img.shape[0], 0, img.shape[1]
    region = gt | (dist <= max(levels))
    if zoom and region.any() and not region.all():
        r, c = np.nonzero(region)
        margin_r, margin_c = max(3, int(0.15 * (np.ptp(r) + 1))), max(3, int(0.15 * (np.ptp(c) + 1)))
        r0, r1 = max(0, r.min() - margin_r), min(img.shape[0], r.max() + 1 + margin_r)
        c0, c1 = max(0, c.min() - margin_c), min(img.shape[1], c.max() + 1 + margin_c)
    aspect = ((r1 - r0) * s_row) / max((c1 - c0) * s_col, 1e-6)
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * min(2.5, max(0.4, aspect))))
    low, high = np.percentile(img, (0.5, 99.5)) if img.size else (0, 1)
    ax.imshow(
        img,
        cmap="gray",
        vmin=low,
        vmax=high if high > low else low + 1,
        extent=extent,
        interpolation="nearest",
    )
    rows = (np.arange(img.shape[0]) + 0.5) * s_row
    cols = (np.arange(img.shape[1]) + 0.5) * s_col
    handles, names = [], []
    if gt.any() and not gt.all():
        ax.contour(
            cols, rows, gt.astype(np.float32), levels=[0.5], colors=GT_COLOUR, linewidths=2.0, linestyles="--"
        )
    handles.append(plt.Line2D([], [], color=GT_COLOUR, linewidth=2.0, linestyle="--"))
    names.append(f"ground truth (class {label})")
    for level, colour in zip(levels, colours):
        if dist.min() < level < dist.max():
            ax.contour(cols, rows, dist, levels=[level], colors=colour, linewidths=1.5)
        handles.append(plt.Line2D([], [], color=colour, linewidth=1.5))
        names.append(f"predicted SDM = {level:g}")
    ax.set_xlim(c0 * s_col, c1 * s_col)
    ax.set_ylim(r1 * s_row, r0 * s_row)
    ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    axis_names = {0: "axial", 1: "coronal", 2: "sagittal"}
    where = f"{axis_names[axis]} slice {slice_index} (axis {axis})"
    ax.set_title(f"{title}\n{where}" if title else f"{where}: predicted SDM level sets", fontsize=10)
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    return _save(plt, fig, out_png, dpi, bbox_inches="tight"), slice_index


def plot_sdm_files(
    image_file: str | Path,
    label_file: str | Path,
    sdm_file: str | Path,
    out_png: str | Path,
    slice_index: int | None = None,
    label: int | None = None,
    axis: int = 0,
    levels: Sequence[float] = SDM_LEVELS,
) -> tuple[Path, int]:
    """:func:`plot_sdm_slice` on image files (the image, its reference label map, the predicted SDM)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(image_file))
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        raise ValueError(f"{image_file}: expected a 3D single-channel image")
    reference = sitk.ReadImage(str(label_file))
    sdm, sdm_spacing, label = read_sdm(sdm_file, label)
    if label is None:
        values = np.unique(sitk.GetArrayViewFromImage(reference))
        values = values[values != 0]
        if values.size == 0:
            raise ValueError(f"{label_file} has no foreground label; pass --class")
        label = int(values[0])
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    labels = sitk.GetArrayFromImage(reference)
    for name, other, other_spacing in (
        ("label", labels, tuple(reversed(reference.GetSpacing()))),
        ("SDM", sdm, sdm_spacing),
    ):
        if other.shape != array.shape or not np.allclose(other_spacing, spacing, rtol=1e-4):
            raise ValueError(
                f"the {name} image does not have the image's geometry: shape {other.shape} vs {array.shape}, "
                f"spacing {tuple(other_spacing)} vs {spacing} (numpy axis order)"
            )
    title = f"{Path(image_file).name}: class {label}, predicted SDM level sets"
    out, index = plot_sdm_slice(
        array,
        labels,
        sdm,
        spacing,
        label,
        out_png,
        slice_index,
        axis,
        levels,
        SDM_LEVEL_COLOURS[: len(levels)] if len(levels) <= 4 else _colours(len(levels)),
        title=title,
    )
    return out, index


def _colours(n: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("autumn")
    return [cmap(i / max(1, n - 1)) for i in range(n)]
