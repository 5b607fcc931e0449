"""Prediction that also writes the predicted signed distance maps (see :mod:`nnunet_sdm.inference.predict`;
the files' format: :mod:`nnunet_sdm.sdm_format`)."""

from nnunet_sdm.inference.predict import SDMExportError, SDMPredictor, export_sdm, resample_sdm_to_original

__all__ = ["SDMExportError", "SDMPredictor", "export_sdm", "resample_sdm_to_original"]
