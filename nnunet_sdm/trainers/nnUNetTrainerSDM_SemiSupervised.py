from nnunet_sdm.training.semi_supervised import nnUNetTrainerSDM_SemiSupervised  # noqa: F401
