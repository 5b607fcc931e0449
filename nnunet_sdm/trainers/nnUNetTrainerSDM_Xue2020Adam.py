from nnunet_sdm.training.xue_optim import nnUNetTrainerSDM_Xue2020Adam  # noqa: F401
