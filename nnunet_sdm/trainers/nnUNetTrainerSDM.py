from nnunet_sdm.training.xue import nnUNetTrainerSDM  # noqa: F401
