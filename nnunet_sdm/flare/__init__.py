"""FLARE challenge submissions: package a trained nnU-Net model (:mod:`.package`), run it case by case and
measure time and memory (:mod:`.run`); the submission's files are templates (``templates/``, filled in by :mod:`.render`)."""

from nnunet_sdm.flare.package import DEFAULT_BASE_IMAGE, SubmissionError, package_submission
from nnunet_sdm.flare.run import FLARE_NSD_TOLERANCE_MM, find_cases, run_submission, summarise

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "FLARE_NSD_TOLERANCE_MM",
    "SubmissionError",
    "find_cases",
    "package_submission",
    "run_submission",
    "summarise",
]
