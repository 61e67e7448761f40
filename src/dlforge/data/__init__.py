"""Data: built-in and user datasets, splits, normalisation statistics, loaders, augmentation."""

# registers audio_folder; shards; text_csv, jsonl, text_folder, langid
from dlforge.data import audio, datasets, shards, text

__all__ = ["audio", "datasets", "shards", "text"]
