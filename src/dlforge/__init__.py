"""dlforge: from a YAML model description to a trained, exported and served model."""

__version__ = "0.1.0"
