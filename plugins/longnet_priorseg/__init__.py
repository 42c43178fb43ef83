"""longnet plugin: prior-conditioned longitudinal segmentation (PriorConcatTrainer, DiffWeightingTrainer)."""
