from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020  # noqa: F401
