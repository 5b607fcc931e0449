from nnunet_sdm.training.caliva import nnUNetTrainerDistPenaltyDiceCE  # noqa: F401
