"""`dlforge data spoken-digits`: "zero" … "nine" synthesized offline with eSpeak NG, in audio_folder layout.

eSpeak NG comes from the `espeakng-loader` wheel (libespeak-ng plus its voice data); it offers only the
library's path, so we call the C API through ctypes. A *voice* is one of eSpeak's voice variants
(m1…m8, f1…f5, klatt, Alex, …: the 89 of its 104 that are not whispered or robotic); every take of a
voice gets a seeded random English accent, rate, pitch, a frequency warp (vocal tract length), gain,
silence and background noise. Files are `<digit>/<voice>__<take>.wav`, so `group_by: '^(.+?)__'` keeps
each voice in one split. torch-free; the same seed writes the same bytes.
"""

from __future__ import annotations

import csv
import ctypes
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.errors import UserError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")
GROUP_BY = r"^(.+?)__"
NOT_SPEECH_LIKE = re.compile(r"whisper|[Rr]obo|Demonic|croak")  # whispered and robotic variants are left out
_RETRIEVAL, _SYNCHRONOUS, _UTF8, _RATE, _PITCH, _RANGE = 1, 2, 1, 1, 3, 4  # espeak_*.h constants


class SynthError(UserError, RuntimeError):
    """eSpeak NG could not be loaded or refused a voice."""


@dataclass(frozen=True)
class Take:
    """One rendition: the voice settings and what is added around it."""

    voice: str
    accent: str
    rate: int  # words per minute
    pitch: int  # 0..100
    range: int  # pitch range 0..100
    gain: float
    snr_db: float
    noise: str  # white | pink
    lead_s: float  # silence before the word
    warp: float  # all frequencies (pitch and formants) × warp, duration ÷ warp: a longer or shorter vocal tract


class ESpeak:
    """The eSpeak NG C library (one per process: the library keeps global state)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise SynthError("eSpeak NG is missing: pip install espeakng-loader") from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())
        self.rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if self.rate <= 0:
            raise SynthError(f"espeak_Initialize failed ({self.rate}) with data at {self.data_path}")
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference: C holds only the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.Array[ctypes.c_short], count: int, events: int) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def variants(self) -> list[str]:
        folder = self.data_path / "voices" / "!v"
        return sorted(p.name for p in folder.iterdir() if p.is_file() and re.fullmatch(r"[A-Za-z0-9-]+", p.name)
                      and not NOT_SPEECH_LIKE.search(p.name))

    def say(self, text: str, take: Take, seed: int) -> np.ndarray:
        """int16 samples at `self.rate` Hz.

        `seed` seeds eSpeak's own random generator (breathy voices such as f2 or Alicia add noise from
        it), which espeak_Initialize seeds from the clock: without it those voices differ from run to run.
        """
        if self.lib.espeak_SetVoiceByName(f"{take.accent}+{take.voice}".encode()) != 0:
            raise SynthError(f"eSpeak NG has no voice {take.accent}+{take.voice}")
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        for parameter, value in ((_RATE, take.rate), (_PITCH, take.pitch), (_RANGE, take.range)):
            self.lib.espeak_SetParameter(parameter, value, 0)
        self._chunks = []
        raw = text.encode()
        self.lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, _UTF8, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def draw_take(voice: str, rng: np.random.Generator) -> Take:
    return Take(voice, str(rng.choice(ACCENTS)), int(rng.integers(120, 221)), int(rng.integers(20, 81)),
                int(rng.integers(20, 81)), float(rng.uniform(0.3, 1.0)), float(rng.uniform(8.0, 35.0)),
                str(rng.choice(["white", "pink"])), float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.88, 1.12)))


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise."""
    white = rng.standard_normal(n)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        white = np.fft.irfft(spectrum, n)
    return white / max(float(np.sqrt(np.mean(white**2))), 1e-12)


def render(speech: np.ndarray, take: Take, rate: int, out_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The take as float32 at `out_rate`: warped, resampled, padded with silence, scaled, with noise at its SNR.

    The warp plays the samples as if they were recorded at `rate × warp` (one resampling): eSpeak's
    variants are a few fixed formant sets, and scaling them covers the space between (and around) them.
    """
    import soxr

    wave = soxr.resample(speech.astype(np.float32) / 32768.0, rate * take.warp, out_rate, quality="HQ")
    lead, tail = int(take.lead_s * out_rate), int(rng.uniform(0.0, 0.15) * out_rate)
    wave = np.concatenate([np.zeros(lead, np.float32), wave, np.zeros(tail, np.float32)])
    peak = max(float(np.abs(wave).max()), 1e-6)
    wave = wave * (take.gain * 0.7 / peak)
    voiced_rms = float(np.sqrt(np.mean(wave[np.abs(wave) > 0.01 * take.gain] ** 2))) if wave.any() else 1e-3
    wave = wave + noise(take.noise, len(wave), rng) * voiced_rms * 10 ** (-take.snr_db / 20)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def choose_voices(variants: list[str], count: int, seed: int) -> list[str]:
    if not 3 <= count <= len(variants):
        raise SynthError(f"--voices must be between 3 and {len(variants)} (eSpeak NG's variants), got {count}")
    picked = np.random.default_rng(seed).choice(len(variants), size=count, replace=False)
    return sorted(variants[i] for i in picked)


def generate(out: Path, voices: int = 89, takes: int = 8, seed: int = 0, sample_rate: int = 16000) -> int:
    """Write `voices` × `takes` × 10 clips under `out` (which must be empty or absent); returns the count."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthError(f"--out {out} exists and is not an empty folder; choose a new one (nothing was written)")
    if takes < 1:
        raise SynthError(f"--takes must be at least 1, got {takes}")
    # libespeak-ng carries state from one synthesis to the next (the same calls give the same samples
    # only from a fresh library), so every generate() runs in a new process: the same seed, the same bytes.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_write_all, out, voices, takes, seed, sample_rate).result()


def _write_all(out: Path, voices: int, takes: int, seed: int, sample_rate: int) -> int:
    import soundfile as sf

    engine = ESpeak()
    rows = []
    for v, voice in enumerate(choose_voices(engine.variants(), voices, seed)):
        for d, word in enumerate(DIGITS):
            (out / word).mkdir(parents=True, exist_ok=True)
            for t in range(takes):
                rng = np.random.default_rng([seed, v, d, t])
                take = draw_take(voice, rng)
                speech = engine.say(word, take, seed=int(rng.integers(2**31)))
                wave = render(speech, take, engine.rate, sample_rate, rng)
                name = f"{word}/{voice}__{t}.wav"
                sf.write(out / name, wave, sample_rate, subtype="PCM_16")
                rows.append({"file": name, "voice": voice, **{k: getattr(take, k) for k in
                             ("accent", "rate", "pitch", "range", "gain", "snr_db", "noise", "lead_s", "warp")}})
    with (out / "voices.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
