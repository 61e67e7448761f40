"""`dlforge data spoken-digits`: the digit words of a language synthesized offline with eSpeak NG, in
audio_folder layout.

eSpeak NG (dlforge.synth.espeak) speaks them. A *voice* is one of eSpeak's voice variants
(m1…m8, f1…f5, klatt, Alex, …: the 89 of its 104 that are not whispered or robotic); every take of a
voice gets a seeded random accent of the language, rate, pitch, a frequency warp (vocal tract length),
gain, silence and background noise. Files are `<digit>/<voice>__<take>.wav`, so `group_by: '^(.+?)__'`
keeps each voice in one split. English folders are the words (`zero` … `nine`); other languages' are
`<lang><digit>_<word>` (`de0_null`), so labels of two languages never coincide. Each voice is synthesized
in its own process (dlforge.synth.isolated): one that crashes or hangs eSpeak is skipped with a warning.
torch-free; the same seed writes the same bytes.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.synth.espeak import DIGITS, LANGUAGES, NOT_SPEECH_LIKE, SynthError, folder_names

__all__ = ["DIGITS", "GROUP_BY", "LANGUAGES", "Generated", "SynthError", "choose_voices", "generate", "read_voices"]

GROUP_BY = r"^(.+?)__"
log = logging.getLogger(__name__)


def voice_variants() -> list[str]:
    """eSpeak NG's speech-like voice variants (read from its data folder; the library is not loaded)."""
    try:
        import espeakng_loader
    except ImportError:
        raise SynthError("eSpeak NG is missing: pip install espeakng-loader") from None
    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file() and re.fullmatch(r"[A-Za-z0-9-]+", p.name)
                  and not NOT_SPEECH_LIKE.search(p.name))


def read_voices(path: Path) -> set[str]:
    """The voices of a generated set, from its voices.csv (for --exclude-voices)."""
    try:
        with path.open(newline="") as handle:
            return {row["voice"] for row in csv.DictReader(handle)}
    except (OSError, KeyError) as exc:
        raise SynthError(f"--exclude-voices {path}: not a voices.csv written by spoken-digits ({exc})") from None


def choose_voices(variants: list[str], count: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()
                  ) -> list[str]:
    """`count` voices drawn (seeded) from `variants` minus `exclude`."""
    free = [v for v in variants if v not in exclude]
    if not 3 <= count <= len(free):
        left = f" ({len(variants) - len(free)} excluded)" if exclude else ""
        raise SynthError(f"--voices must be between 3 and {len(free)} (eSpeak NG's variants{left}), got {count}")
    picked = np.random.default_rng(seed).choice(len(free), size=count, replace=False)
    return sorted(free[i] for i in picked)


@dataclass(frozen=True)
class Generated:
    """What generate() wrote: clip count, the voices written and the voices skipped (voice → why)."""

    clips: int
    voices: list[str]
    skipped: dict[str, str]


def generate(out: Path, voices: int = 89, takes: int = 8, seed: int = 0, sample_rate: int = 16000,
             language: str = "en", exclude: set[str] | frozenset[str] = frozenset(), workers: int = 1,
             voice_timeout_s: float | None = None) -> Generated:
    """Write `voices` × `takes` × 10 clips under `out` (which must be empty or absent), skipping (with a
    warning) a voice whose synthesis crashes or hangs; `exclude`: voices not to use (another set's)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthError(f"--out {out} exists and is not an empty folder; choose a new one (nothing was written)")
    if takes < 1:
        raise SynthError(f"--takes must be at least 1, got {takes}")
    if language not in LANGUAGES:
        raise SynthError(f"--language {language!r} is not known; choose one of {', '.join(LANGUAGES)}")
    from dlforge.synth.espeak import write_voice
    from dlforge.synth.isolated import Failed, run_isolated

    chosen = choose_voices(voice_variants(), voices, seed, exclude)
    jobs = [(out, language, voice, v, takes, seed, sample_rate) for v, voice in enumerate(chosen)]
    # libespeak-ng carries state from one synthesis to the next (the same calls give the same samples only
    # from a fresh library), so each voice runs in a new process, its takes seeded by (seed, voice, digit,
    # take): the same seed, the same bytes, whatever the workers; a crash or hang loses that voice only.
    limit = voice_timeout_s if voice_timeout_s is not None else 60 + 2.0 * takes * 10
    results = run_isolated(write_voice, jobs, workers, limit)
    rows, skipped = [], {}
    for voice, result in zip(chosen, results, strict=True):
        if isinstance(result, Failed):
            skipped[voice] = result.reason
            log.warning("voice %s skipped: %s", voice, result.reason)
            for name in folder_names(language):
                for partial in (out / name).glob(f"{voice}__*.wav"):
                    partial.unlink()
        else:
            rows.extend(result)
    if not rows:
        raise SynthError(f"no voice could be synthesized: {'; '.join(f'{v}: {r}' for v, r in skipped.items())}")
    with (out / "voices.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Generated(len(rows), [v for v in chosen if v not in skipped], skipped)
