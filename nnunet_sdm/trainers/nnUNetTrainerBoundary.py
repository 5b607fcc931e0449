from nnunet_sdm.training.baselines import nnUNetTrainerBoundary  # noqa: F401
