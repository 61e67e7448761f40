"""The `audio_folder` dataset: root/<class>/<clip>.wav|flac|ogg → fixed-length mono waveforms.

Each clip is decoded with soundfile, mixed to mono, resampled with soxr and cropped/padded to
`duration` at a random offset seeded by (run seed, clip) (see dlforge.audio_io, shared with predict and
serve) — when a loader asks for it, in its worker processes: the folder is never held in memory.
`group_by` names the speaker of each clip so splits can keep every speaker in one split only.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dlforge.audio_io import AUDIO_SUFFIXES, AudioError, AudioFormat, load_clip
from dlforge.data.datasets import DATASETS, DataError, DatasetEntry, Params, RawData, list_samples
from dlforge.data.samples import FileSamples, sample_rng

log = logging.getLogger(__name__)


class GroupByCsv(BaseModel):
    """A sidecar table naming each file's group: `{csv: speakers.csv, column: speaker}`."""

    model_config = ConfigDict(extra="forbid")
    csv: Path = Field(description="CSV file (relative to data.params.path or absolute)")
    column: str = Field(description="the column holding the group (e.g. speaker)")
    file_column: str = Field("file", description="the column holding the file path relative to the root")


class AudioSettings(Params):
    """How an audio file becomes a model input, and who spoke it (audio_folder, shards of audio)."""

    sample_rate: int = Field(16000, ge=1000, le=384000, description="Hz; files at other rates are resampled")
    duration: float = Field(1.0, gt=0, le=60, description="seconds; clips are cropped/padded to it")
    mix_channels: bool = Field(True, description="average multi-channel files to mono (false: refuse them)")
    resample: bool = Field(True, description="resample files at other rates with soxr (false: refuse them)")
    group_by: str | GroupByCsv | None = Field(
        None, description="speaker of each clip, for speaker-independent splits: a regex on the file name "
                          "(first capture group, else the match) or {csv, column, file_column}")
    @field_validator("group_by")
    @classmethod
    def _compiles(cls, value: str | GroupByCsv | None) -> str | GroupByCsv | None:
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc}), e.g. '^([a-z0-9-]+)_'") from None
        return value

    def audio_format(self) -> AudioFormat:
        return AudioFormat(self.sample_rate, self.duration, self.mix_channels, self.resample)


class AudioFolderParams(AudioSettings):
    path: Path
    skip_unreadable: bool = Field(False, description="replace an unreadable file by the next one, with a warning "
                                                     "naming it, instead of failing")


def list_clips(root: Path, key: str = "data.params.path") -> tuple[list[str], list[str], list[int], np.ndarray | None]:
    """The class names and every clip (relative path, class index, split folder if any) under `root`
    (`key`: what messages blame)."""
    classes, files, targets, given_split = list_samples(root, AUDIO_SUFFIXES, "audio files", key)
    present = set(targets)
    empty = [name for i, name in enumerate(classes) if i not in present]
    if empty:
        raise DataError(f"{key}: no {'/'.join(AUDIO_SUFFIXES)} files in class folder(s) "
                        f"{', '.join(empty)} under {root}")
    return classes, files, targets, given_split


def group_of(relative: str, rule: str | GroupByCsv, table: dict[str, str]) -> str:
    """The group (speaker) of one clip, by its path relative to the root (`class/name.wav`): the regex on
    its file name, or the CSV table (`table`, keyed by relative path)."""
    if isinstance(rule, str):
        name = relative.rsplit("/", 1)[-1]
        match = re.search(rule, name)
        if match is None:
            raise DataError(f"data.params.group_by: {rule!r} does not match the file name {name!r} "
                            f"({relative}); every clip needs a group")
        return match.group(1) if match.groups() else match.group(0)
    if relative not in table:
        raise DataError(f"data.params.group_by.csv: no row for {relative!r} in column {rule.file_column!r}")
    return table[relative]


def read_group_table(root: Path, rule: GroupByCsv) -> dict[str, str]:
    path = rule.csv if rule.csv.is_absolute() else root / rule.csv
    try:
        with path.open(newline="") as handle:
            return group_table(handle, str(path), rule)
    except OSError as exc:
        raise DataError(f"data.params.group_by.csv: cannot read {path}: {exc}") from None


def group_table(handle: Iterable[str], where: str, rule: GroupByCsv) -> dict[str, str]:
    """The CSV's file → group column (`where`: the file, for messages)."""
    rows = list(csv.DictReader(handle))
    missing = [c for c in (rule.file_column, rule.column) if rows and c not in rows[0]]
    if not rows or missing:
        raise DataError(f"data.params.group_by.csv: {where} needs the columns {rule.file_column!r} and "
                        f"{rule.column!r} (found {list(rows[0]) if rows else 'no rows'})")
    return {row[rule.file_column]: row[rule.column] for row in rows}


@dataclass(frozen=True)
class ClipReader:
    """One audio file (or its bytes from a shard) → the model's input (picklable: loader workers may be spawned)."""

    fmt: AudioFormat
    seed: int

    def __call__(self, source: Path | bytes, index: int, draw: int | None, name: str = "") -> np.ndarray:
        return load_clip(source, self.fmt, sample_rng(self.seed, index), name=name)  # the same crop every epoch


def load_audio_folder(p: AudioFolderParams, seed: int) -> RawData:
    """The folder's clips and their groups; each clip is decoded when a loader asks for it."""
    root = p.path.expanduser()
    classes, files, targets, given_split = list_clips(root)
    fmt = p.audio_format()
    table = read_group_table(root, p.group_by) if isinstance(p.group_by, GroupByCsv) else {}
    groups = [group_of(file, p.group_by, table) for file in files] if p.group_by is not None else None
    samples = FileSamples(root, files, targets, ClipReader(fmt, seed), (AudioError,), p.skip_unreadable)
    return RawData(torch.empty(0), torch.tensor(targets), classes, fmt.as_preprocessing(), groups=groups,
                   samples=samples, sample_shape=(fmt.samples,), keys=files, given_split=given_split)


DATASETS.add("audio_folder", DatasetEntry(AudioFolderParams, load_audio_folder,  # type: ignore[arg-type]
                                          "path/<class>/<clip>.wav|flac|ogg files → mono waveforms",
                                          lambda p: (p.audio_format().samples,)))
