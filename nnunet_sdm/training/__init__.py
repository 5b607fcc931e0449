"""nnU-Net trainers: one base with the plumbing, one small module per paper."""
