"""Audio upload → the model's waveform input, following the package's `preprocessing` section (torch-free).

The clip is decoded, mixed to mono and resampled exactly as the training data was (dlforge.audio_io),
then zero-padded to the model's length; clips longer than that are refused, never silently cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.audio_io import AudioError, AudioFormat, load_clip
from dlforge.preprocessing import AudioPreprocessing
from dlforge.serve.tensors import ProtocolError


def preprocess_audio(data: bytes | Path, preprocessing: AudioPreprocessing) -> np.ndarray:
    """A [1, samples] float32 batch of one clip; ProtocolError (400) for anything that is not usable audio."""
    fmt = AudioFormat.from_preprocessing(preprocessing)
    try:
        return load_clip(data, fmt, max_duration=fmt.duration)[None]
    except AudioError as exc:
        raise ProtocolError(str(exc)) from None
