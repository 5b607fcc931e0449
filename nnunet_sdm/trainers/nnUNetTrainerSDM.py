from nnunet_sdm.training.sdm import nnUNetTrainerSDM  # noqa: F401
