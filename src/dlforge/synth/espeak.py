"""eSpeak NG through ctypes, and one voice's takes of the digit words (run in a fresh process per voice by
dlforge.data.spoken_digits). torch-free and outside dlforge.data, so a voice's process starts in a blink.

eSpeak NG comes from the `espeakng-loader` wheel (libespeak-ng plus its voice data); it offers only the
library's path, so we call the C API through ctypes.
"""

from __future__ import annotations

import ctypes
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.errors import UserError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")


@dataclass(frozen=True)
class Language:
    """The ten digit words of a language (as spoken) and the eSpeak NG accents that speak them."""

    words: tuple[str, ...]
    accents: tuple[str, ...]


LANGUAGES = {
    "en": Language(DIGITS, ACCENTS),
    "de": Language(("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"), ("de",)),
    "fr": Language(("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
                   ("fr", "fr-be", "fr-ch")),
    "es": Language(("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
                   ("es", "es-419")),
    "it": Language(("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"), ("it",)),
    "nl": Language(("nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"), ("nl",)),
    "pt": Language(("zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove"),
                   ("pt", "pt-br")),
}
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


def draw_take(voice: str, rng: np.random.Generator, accents: tuple[str, ...] = ACCENTS) -> Take:
    return Take(voice, str(rng.choice(accents)), int(rng.integers(120, 221)), int(rng.integers(20, 81)),
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




def folder_names(language: str) -> list[str]:
    """The class folders: English keeps its words (`zero`), others are `<lang><digit>_<ascii word>` (`de0_null`)."""
    words = LANGUAGES[language].words
    if language == "en":
        return list(words)
    ascii_words = (unicodedata.normalize("NFKD", w).encode("ascii", "ignore").decode() for w in words)
    return [f"{language}{d}_{w}" for d, w in enumerate(ascii_words)]


def write_voice(out: Path, language: str, voice: str, v: int, takes: int, seed: int,
                 sample_rate: int) -> list[dict[str, object]]:
    """Every take of every digit by one voice (in a fresh process); the rows of voices.csv."""
    import soundfile as sf

    engine, lang = ESpeak(), LANGUAGES[language]
    salt = [] if language == "en" else list(language.encode())  # English keeps its draws from before languages
    rows: list[dict[str, object]] = []
    for d, (word, folder) in enumerate(zip(lang.words, folder_names(language), strict=True)):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for t in range(takes):
            rng = np.random.default_rng([seed, v, d, t, *salt])
            take = draw_take(voice, rng, lang.accents)
            speech = engine.say(word, take, seed=int(rng.integers(2**31)))
            wave = render(speech, take, engine.rate, sample_rate, rng)
            name = f"{folder}/{voice}__{t}.wav"
            sf.write(out / name, wave, sample_rate, subtype="PCM_16")
            rows.append({"file": name, "voice": voice, "language": language, **{k: getattr(take, k) for k in
                         ("accent", "rate", "pitch", "range", "gain", "snr_db", "noise", "lead_s", "warp")}})
    return rows
