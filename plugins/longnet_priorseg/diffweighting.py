"""`DiffWeightingTrainer`: shared planned encoder over current and prior visit, difference-weighted fusion of
the two visits' features at every resolution, planned decoder (after Rokuss et al., "Longitudinal Segmentation
of MS Lesions via Temporal Difference Weighting", MICCAI LDTM 2024).

Everything else — prior choice, paired augmentation, loss, deep supervision, final validation and chained
prediction — is `PriorConcatTrainer`'s. The block fuses image features only: `--prior-seg gt` is refused.
"""
from __future__ import annotations

from longnet.api import LongnetError
from longnet_priorseg.trainer import PriorConcatTrainer


class DiffWeightingTrainer(PriorConcatTrainer):
    """Prior-conditioned segmentation with difference weighting of shared-encoder features."""

    network_kind = "diff"
    hidden_options = ("augmentation", "prior_seg")  # no prior-segmentation channels in the fused features

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.prior_seg != "none":
            raise LongnetError("DiffWeightingTrainer fuses image features of the two visits; --prior-seg gt is "
                               "only available with PriorConcatTrainer")
