"""nnunet-sdm: shape-aware nnU-Net v2 trainers that learn signed distance maps."""

from pathlib import Path

__version__ = "0.1.0"


def trainers_path() -> str:
    """The folder to export as ``nnUNet_extTrainer``.

    In a source checkout (editable install) that is the repository's ``trainers/``; a regular
    ``pip install`` ships the same shims inside the package as ``nnunet_sdm/trainers/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "trainers", here.parent / "trainers"):
        if (candidate / "nnUNetTrainerSDM.py").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no trainer shims found next to {here}: reinstall nnunet-sdm (pip install .) or check out trainers/"
    )
