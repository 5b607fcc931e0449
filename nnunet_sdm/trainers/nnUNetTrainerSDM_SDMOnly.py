from nnunet_sdm.training.xue import nnUNetTrainerSDM_SDMOnly  # noqa: F401
