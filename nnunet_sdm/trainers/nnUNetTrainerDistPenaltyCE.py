from nnunet_sdm.training.caliva import nnUNetTrainerDistPenaltyCE  # noqa: F401
