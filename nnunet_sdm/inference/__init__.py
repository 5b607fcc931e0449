"""Prediction that also writes the predicted signed distance maps (see :mod:`nnunet_sdm.inference.predict`)."""

from nnunet_sdm.inference.predict import (
    SDM_FOLDER,
    SDMExportError,
    SDMPredictor,
    export_prediction_and_sdm,
    export_sdm,
    resample_sdm_to_original,
    sdm_path,
)

__all__ = [
    "SDM_FOLDER",
    "SDMExportError",
    "SDMPredictor",
    "export_prediction_and_sdm",
    "export_sdm",
    "resample_sdm_to_original",
    "sdm_path",
]
