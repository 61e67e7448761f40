"""Small real audio for tests: WAV files written with soundfile, spoken digits synthesized by eSpeak NG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from dlforge.data.spoken_digits import generate


def tone(freq: float, seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def wav_bytes(wave: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone_folder(root: Path, rate: int = 16000, per_class: int = 4, speakers: int = 4) -> Path:
    """root/<low|high>/<speaker>_<i>.wav: two learnable classes of tones, several 'speakers' each."""
    rng = np.random.default_rng(0)
    for name, base in (("low", 300.0), ("high", 1200.0)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for s in range(speakers):
            for i in range(per_class):
                seconds = float(rng.uniform(0.3, 0.7))
                sf.write(root / name / f"spk{s}_{i}.wav", tone(base * (1 + 0.05 * s), seconds, rate), rate)
    return root


def spoken_digits(root: Path, voices: int = 4, takes: int = 1) -> Path:
    """A few eSpeak NG clips per digit (voices × takes × 10), 16 kHz."""
    generate(root, voices=voices, takes=takes, seed=0, workers=2)
    return root
