"""Preprocessed-case access, samplers, augmentation and background loading for trainers."""
from longnet.data.dataset_index import DatasetIndex
from longnet.data.loader import batch_iterator, default_num_workers

__all__ = ["DatasetIndex", "batch_iterator", "default_num_workers"]
