from nnunet_sdm.training.xue import nnUNetTrainerSDM_L1  # noqa: F401
