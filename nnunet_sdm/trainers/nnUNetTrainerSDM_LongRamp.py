from nnunet_sdm.training.sdm import nnUNetTrainerSDM_LongRamp  # noqa: F401
