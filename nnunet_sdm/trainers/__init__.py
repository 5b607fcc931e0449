# Trainer shims for nnUNet_extTrainer (`nnunet-sdm trainers-path`); the repository's trainers/ links here.
# nnU-Net imports every module in this folder as a top-level module, so each file is one import line;
# the classes live in nnunet_sdm.training.
