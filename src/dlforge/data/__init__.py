"""Data: built-in and user datasets, splits, normalisation statistics, loaders, augmentation."""

from dlforge.data import audio, datasets, text  # register audio_folder; text_csv, jsonl, text_folder, langid

__all__ = ["audio", "datasets", "text"]
