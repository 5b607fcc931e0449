from nnunet_sdm.training.sdm import nnUNetTrainerSDM_NoRamp  # noqa: F401
