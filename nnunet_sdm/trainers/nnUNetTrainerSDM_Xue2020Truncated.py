from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020Truncated  # noqa: F401
