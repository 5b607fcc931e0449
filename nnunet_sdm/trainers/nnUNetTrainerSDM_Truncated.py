from nnunet_sdm.training.xue import nnUNetTrainerSDM_Truncated  # noqa: F401
