from nnunet_sdm.training.baselines import nnUNetTrainerHD  # noqa: F401
