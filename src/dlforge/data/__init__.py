"""Data: built-in and user datasets, splits, normalisation statistics, loaders, augmentation."""

from dlforge.data import audio as _audio  # noqa: F401  (registers the audio_folder dataset)
