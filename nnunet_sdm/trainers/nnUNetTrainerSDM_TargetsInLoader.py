from nnunet_sdm.training.xue import nnUNetTrainerSDM_TargetsInLoader  # noqa: F401
