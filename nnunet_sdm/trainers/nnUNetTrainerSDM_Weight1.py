from nnunet_sdm.training.sdm import nnUNetTrainerSDM_Weight1  # noqa: F401
