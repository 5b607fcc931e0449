from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020L1  # noqa: F401
