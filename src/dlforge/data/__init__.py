"""Data: built-in and user datasets, splits, normalisation statistics, loaders, augmentation."""
