from nnunet_sdm.training.sdm import nnUNetTrainerSDM_DetachedHead  # noqa: F401
