"""Metrics: `segmentation` (Dice, IoU, HD95, nnU-Net's summary.json), `longitudinal` (ASPC, STCS), `image`
(NRMSE, PSNR, SSIM), `classification` (accuracy, macro-F1, AUROC, PR-AUC, balanced accuracy) and `embedding`
(mean consecutive cosine distance). Heavy dependencies (MONAI, sklearn) are imported only when used."""
