from nnunet_sdm.training.li import nnUNetTrainerMapDice  # noqa: F401
