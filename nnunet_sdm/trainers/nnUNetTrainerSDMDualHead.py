from nnunet_sdm.training.wang_zhang import nnUNetTrainerSDMDualHead  # noqa: F401
