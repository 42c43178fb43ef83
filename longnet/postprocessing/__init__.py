"""nnU-Net's postprocessing: keep only the largest connected component of the foreground and of each label or
region, where cross-validation shows that it helps (`determine`), and the same steps on new predictions
(`apply`). Decisions live in `postprocessing.json` (read by longnet) and `postprocessing.pkl` (nnU-Net's name)."""
