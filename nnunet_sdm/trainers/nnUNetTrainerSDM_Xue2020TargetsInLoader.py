from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020TargetsInLoader  # noqa: F401
