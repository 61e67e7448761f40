"""Audio files → mono float32 waveforms at the model's rate (torch-free: training, predict and serve share it).

Decoding is libsndfile's (`soundfile`), resampling is `soxr`'s (the same quality setting everywhere), so a
clip reaches the model identically in training, `dlforge predict` and the server.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.errors import UserError
from dlforge.preprocessing import AudioPreprocessing

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MIN_RATE, MAX_RATE = 1_000, 384_000  # anything outside is a broken header, not audio
SOXR_QUALITY = "HQ"


class AudioError(UserError, ValueError):
    """Audio that cannot become a model input; the message says what is wrong and what to send."""


@dataclass(frozen=True)
class AudioFormat:
    """How raw audio becomes a model input (recorded in run.json and the package's preprocessing)."""

    sample_rate: int
    duration: float  # seconds; every clip is cropped or padded to this
    mix_channels: bool = True  # False: multi-channel files are refused instead of averaged
    resample: bool = True  # False: files at another rate are refused instead of resampled

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.duration)

    def as_preprocessing(self) -> AudioPreprocessing:
        return AudioPreprocessing(sample_rate=self.sample_rate, duration=self.duration, samples=self.samples,
                                  channels=1, mix_channels=self.mix_channels, resample=self.resample,
                                  dtype="float32 in [-1, 1]")

    @classmethod
    def from_preprocessing(cls, prep: AudioPreprocessing) -> AudioFormat:
        return cls(prep.sample_rate, prep.duration, prep.mix_channels, prep.resample)


def read_audio(source: Path | bytes, name: str = "", max_duration: float | None = None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 in [-1, 1] and the file's rate; AudioError for anything unreadable.

    The length is checked from the header before decoding, so an oversized upload costs nothing.
    """
    import soundfile as sf

    where = name or (str(source) if isinstance(source, Path) else "the upload")
    try:
        with sf.SoundFile(source if isinstance(source, Path) else io.BytesIO(source)) as handle:
            rate, frames = int(handle.samplerate), handle.frames
            if not MIN_RATE <= rate <= MAX_RATE:
                raise AudioError(f"{where}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
            if max_duration is not None and frames > max_duration * rate + 1:
                raise AudioError(f"{where}: {frames / rate:.2f} s is too long; this model takes clips of at most "
                                 f"{max_duration:g} s (trim it, e.g. sox in.wav out.wav trim 0 {max_duration:g})")
            data = handle.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's own reason only: str(exc) names the in-memory file object by its address (#29)
        reason = str(getattr(exc, "error_string", "") or "").strip().rstrip(".") or "it could not be decoded"
        raise AudioError(f"{where}: not audio that libsndfile can read ({reason}{_format_note(source)}); send "
                         f"{readable_formats()}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{where}: the file holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{where}: the file holds NaN or infinite samples")
    return data, rate


def reads_mp3() -> bool:
    """Whether this machine's libsndfile decodes MP3 (built with mpg123: libsndfile ≥ 1.1)."""
    import soundfile as sf

    return "MP3" in sf.available_formats()


def readable_formats() -> str:
    """What this machine's libsndfile decodes, for messages."""
    return "a WAV, FLAC, OGG or MP3 file" if reads_mp3() else "a WAV, FLAC or OGG file"


def _format_note(source: Path | bytes) -> str:
    """Names the format the bytes look like when libsndfile refused them (the name or extension never decides)."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return ""
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ("; the bytes look like MP3" if reads_mp3() else
                "; the bytes look like MP3, which this server's libsndfile cannot decode")
    return ""


def to_mono(data: np.ndarray, fmt: AudioFormat, where: str) -> np.ndarray:
    """(frames, channels) → (frames,): the channel mean, or AudioError when mixing is off."""
    if data.shape[1] == 1:
        return data[:, 0]
    if not fmt.mix_channels:
        raise AudioError(f"{where}: {data.shape[1]} channels, but this model takes mono audio; "
                         f"mix it down first (e.g. sox in.wav -c 1 out.wav)")
    return data.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, rate: int, fmt: AudioFormat, where: str) -> np.ndarray:
    """The waveform at the model's rate (soxr), or AudioError when resampling is off."""
    if rate == fmt.sample_rate:
        return wave
    if not fmt.resample:
        raise AudioError(f"{where}: sample rate {rate} Hz, but this model takes {fmt.sample_rate} Hz; "
                         f"resample it first (e.g. sox in.wav -r {fmt.sample_rate} out.wav)")
    import soxr

    return np.asarray(soxr.resample(wave, rate, fmt.sample_rate, quality=SOXR_QUALITY), dtype=np.float32)


def fit_length(wave: np.ndarray, samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """Crop or zero-pad to `samples`: at a random offset from `rng` (training data), else centred."""
    extra = len(wave) - samples
    if extra == 0:
        return wave
    offset = int(rng.integers(0, abs(extra) + 1)) if rng is not None else abs(extra) // 2
    if extra > 0:
        return wave[offset:offset + samples]
    out = np.zeros(samples, dtype=np.float32)
    out[offset:offset + len(wave)] = wave
    return out


def load_clip(source: Path | bytes, fmt: AudioFormat, rng: np.random.Generator | None = None,
              max_duration: float | None = None, name: str = "") -> np.ndarray:
    """One clip as the model's input (samples,) float32: decode, mono, resample, crop/pad.

    `max_duration` (seconds) refuses longer clips instead of cropping them: a server must not
    silently classify only part of what it was sent.
    """
    where = name or (str(source) if isinstance(source, Path) else "the upload")
    data, rate = read_audio(source, where, max_duration)
    wave = resample(to_mono(data, fmt, where), rate, fmt, where)
    return fit_length(wave, fmt.samples, rng)
