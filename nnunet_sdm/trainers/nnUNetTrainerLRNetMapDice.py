from nnunet_sdm.training.li import nnUNetTrainerLRNetMapDice  # noqa: F401
