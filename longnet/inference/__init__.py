"""Inference: sliding window with Gaussian weighting and mirroring TTA (`sliding_window`), export back to the
input's geometry (`export`), and `predictor.Predictor` tying them to a model folder or a live trainer."""
