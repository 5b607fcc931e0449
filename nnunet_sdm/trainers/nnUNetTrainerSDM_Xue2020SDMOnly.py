from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020SDMOnly  # noqa: F401
