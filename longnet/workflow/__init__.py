"""nnU-Net's workflow after training: cross-validation results and the choice of the best configuration
(above evaluation, postprocessing and ensembling)."""
