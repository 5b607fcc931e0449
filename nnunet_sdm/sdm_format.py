"""The predicted-SDM file format of ``nnunet-sdm predict --save-sdm``: where the files go, their units,
the writer, ``sdm.json`` and the reader, in one place (no nnU-Net import).

Layout, beside nnU-Net's label maps in the output folder::

    OUT/<case><file_ending>                 nnU-Net's label map
    OUT/sdm/<case>_sdm<file_ending>         one float32 image per case; its last dimension is the class
                                            (the foreground labels in increasing order)
    OUT/sdm/sdm.json                        classes, unit, sign convention, trainer, settings

Values are the network's *normalised* SDM in [-1, 1], negative inside, 0 on the predicted boundary, +1
outside nnU-Net's nonzero crop. For truncated targets (``truncation_mm`` in ``sdm.json``, e.g.
``nnUNetTrainerSDM``) ``truncation_mm * value`` is mm where ``|value| < 1``; for Xue et al.'s per-patch
normalisation there is no exact conversion to mm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = [
    "SDM_FOLDER",
    "SDM_INFO",
    "SDM_UNIT",
    "SDM_UNIT_TRUNCATED",
    "SUPPORTED_WRITERS",
    "read_sdm",
    "read_sdm_info",
    "sdm_info",
    "sdm_path",
    "write_sdm_image",
    "write_sdm_info",
]

SDM_FOLDER = "sdm"
SDM_INFO = "sdm.json"
SDM_UNIT = (
    "normalised signed distance, unitless, in [-1, 1] (tanh head, per-patch normalised targets); not mm"
)
SDM_UNIT_TRUNCATED = (
    "truncated signed distance clamp(sdm_mm / truncation_mm, -1, 1): truncation_mm * value is mm where "
    "|value| < 1"
)
#: nnU-Net image readers/writers whose geometry the SDM images can be written with
SUPPORTED_WRITERS = ("SimpleITKIO", "SimpleITKIOWithReorient", "NibabelIO")


def sdm_path(output_file_truncated: str | os.PathLike, file_ending: str) -> Path:
    """Where the SDM of the case whose label map is ``output_file_truncated + file_ending`` goes."""
    truncated = Path(output_file_truncated)
    return truncated.parent / SDM_FOLDER / f"{truncated.name}_sdm{file_ending}"


def write_sdm_image(sdm: np.ndarray, path: str | Path, properties: dict, writer_name: str) -> None:
    """Write (K, *spatial) float32 as one image whose last dimension is the class, with the case's geometry
    (nnU-Net's ``properties`` of the case as its reader returned them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer_name in ("SimpleITKIO", "SimpleITKIOWithReorient"):
        import SimpleITK as sitk

        stuff = properties["sitk_stuff"]
        volumes = []
        for channel in sdm:
            if len(stuff["spacing"]) == 2:  # nnU-Net reads 2D images as (1, y, x)
                channel = channel[0]
            image = sitk.GetImageFromArray(np.ascontiguousarray(channel))
            image.SetSpacing(stuff["spacing"])
            image.SetOrigin(stuff["origin"])
            image.SetDirection(stuff["direction"])
            if "original_orientation" in stuff:
                image = sitk.DICOMOrient(image, stuff["original_orientation"])
            volumes.append(image)
        sitk.WriteImage(sitk.JoinSeries(volumes), str(path), True)
    elif writer_name == "NibabelIO":
        import nibabel

        data = np.stack([c.transpose((2, 1, 0)) for c in sdm], axis=-1)  # nnU-Net's NibabelIO axis order
        nibabel.save(
            nibabel.Nifti1Image(data, affine=properties["nibabel_stuff"]["original_affine"]), str(path)
        )
    else:
        raise ValueError(
            f"cannot write SDM images with {writer_name}; supported: {', '.join(SUPPORTED_WRITERS)}"
        )


def sdm_info(
    classes: list[int],
    class_names: dict[int, str],
    file_ending: str,
    trainer: str,
    truncation_mm: float | None,
    label_map_is_sdm_heaviside: bool,
    tile_step_size: float,
    use_mirroring: bool,
) -> dict:
    """The content of ``sdm.json``."""
    return {
        "files": f"<case>_sdm{file_ending}: one image per case, last dimension = class",
        "classes": [int(c) for c in classes],
        "class_names": {str(k): v for k, v in class_names.items()},
        "unit": SDM_UNIT if truncation_mm is None else SDM_UNIT_TRUNCATED,
        "sign": "negative inside the class, positive outside, 0 on the predicted boundary",
        "outside_crop": "+1 outside nnU-Net's nonzero crop (background there)",
        "trainer": trainer,
        "truncation_mm": truncation_mm,
        "label_map_is_sdm_heaviside": label_map_is_sdm_heaviside,
        "tile_step_size": tile_step_size,
        "use_mirroring": use_mirroring,
    }


def write_sdm_info(output_folder: str | Path, info: dict) -> Path:
    """Write ``OUT/sdm/sdm.json``."""
    folder = Path(output_folder) / SDM_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SDM_INFO
    path.write_text(json.dumps(info, indent=2))
    return path


def read_sdm_info(sdm_file: str | Path) -> dict | None:
    """``sdm.json`` beside an SDM image, or None."""
    info = Path(sdm_file).parent / SDM_INFO
    return json.loads(info.read_text()) if info.is_file() else None


def read_sdm(path: str | Path, label: int | None = None) -> tuple[np.ndarray, tuple[float, ...], int | None]:
    """An SDM image written by ``nnunet-sdm predict --save-sdm`` (or any 3D SDM image) -> (array, spacing, label).

    A 4D image holds one volume per class (last ITK dimension); the classes are read from ``sdm.json``
    beside it (default: 1..K). Returns the (z, y, x) array of ``label`` (default: the first class), the
    spacing in numpy axis order and the label.
    """
    import SimpleITK as sitk

    path = Path(path)
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    if image.GetNumberOfComponentsPerPixel() > 1:  # classes stored as vector components
        array = np.moveaxis(array, -1, 0)
    if array.ndim == 4:
        info = read_sdm_info(path)
        classes = info["classes"] if info else list(range(1, array.shape[0] + 1))
        if len(classes) != array.shape[0]:
            raise ValueError(
                f"{path}: {array.shape[0]} SDM volumes but {len(classes)} classes in {path.parent / SDM_INFO}"
            )
        label = classes[0] if label is None else int(label)
        if label not in classes:
            raise ValueError(f"{path}: no SDM of class {label}; it holds classes {classes}")
        return array[classes.index(label)], spacing[-3:], label
    return array, spacing, label
