"""nnunet-sdm: shape-aware nnU-Net v2 trainers that learn signed distance maps."""

from pathlib import Path

__version__ = "0.1.0"


def trainers_path() -> str:
    """The folder to export as ``nnUNet_extTrainer``.

    The shims ship inside the package (``nnunet_sdm/trainers/``, which the repository's ``trainers/``
    links to), so this is the same folder for an editable and a regular install.
    """
    folder = Path(__file__).resolve().parent / "trainers"
    if not (folder / "nnUNetTrainerSDM.py").is_file():
        raise FileNotFoundError(f"{folder}: the trainer shims are missing; reinstall nnunet-sdm")
    return str(folder)
