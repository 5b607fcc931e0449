from nnunet_sdm.training.xue_optim import nnUNetTrainerSDM_XueAdam  # noqa: F401
