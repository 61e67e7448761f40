"""Data: built-in and user datasets, splits, normalisation statistics, loaders, augmentation."""

from dlforge.data import datasets, text  # text registers text_csv, jsonl, text_folder, langid

__all__ = ["datasets", "text"]
