"""Image-level operations below fingerprint, planning and preprocessing: cropping to the non-zero region,
resampling (nnU-Net's rules) and intensity normalisation schemes."""
