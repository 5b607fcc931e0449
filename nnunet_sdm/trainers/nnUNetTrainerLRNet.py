from nnunet_sdm.training.li import nnUNetTrainerLRNet  # noqa: F401
