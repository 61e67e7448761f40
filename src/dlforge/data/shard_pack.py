"""`dlforge data pack`: an image or audio folder → tar shards in the WebDataset layout + index.json.

Files are stored as they are (a JPEG stays a JPEG: decoding happens at training time, as for folders)
and streamed from disk into the tar with the stdlib `tarfile`, so memory never holds the data: only
the index's few numbers per sample. Members get a fixed owner, mode and time, so the same folder packs
to the same bytes (and the same sha256). index.json is written last, atomically: a folder with an
index.json is complete. The format: dlforge.data.shards and docs/data.md.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.audio_io import AUDIO_SUFFIXES
from dlforge.data.audio import list_clips
from dlforge.data.datasets import IMAGE_SUFFIXES, DataError, list_samples, split_folders
from dlforge.data.shards import INDEX, ShardEntry, ShardIndex, sha256_of

SHARD_NAME = "shard-{:06d}.tar"  # shard-{000000..000041}.tar in webdataset's brace notation
KEY = "{:08d}"  # a sample's WebDataset key: its position in the folder's sorted order
DEFAULT_SHARD_SIZE = 256 * 1000**2
BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE
UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
         "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from '256MB', '1GiB', '500k' or '1000000'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS or float(match.group(1)) * UNITS[unit] < 1:
        raise DataError(f"--shard-size: {text!r} is not a size; write e.g. 256MB, 1GB or 512MiB")
    return int(float(match.group(1)) * UNITS[unit])


@dataclass(frozen=True)
class Source:
    """The folder to pack: its kind, classes and files (relative, sorted as the folder datasets sort them)
    and, for train/ val/ test/ folders, the split of each."""

    root: Path
    kind: str
    classes: list[str]
    files: list[str]
    labels: list[int]
    splits: list[int] | None


def _folders(root: Path) -> list[str]:
    return [d.path for d in os.scandir(root) if d.is_dir() and not d.name.startswith(".")] if root.is_dir() else []


def detect_kind(root: Path) -> str:
    """'audio' when the class folders hold more audio files than images (by name only), else 'image'."""
    counts: Counter[str] = Counter()
    splits = split_folders(root) if root.is_dir() else []
    for folder in [c for s in splits for c in _folders(root / s)] or _folders(root):
        for name in os.listdir(folder):
            suffix = os.path.splitext(name)[1].lower()
            counts["image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else ""] += 1
    return "audio" if counts["audio"] > counts["image"] else "image"


def list_source(root: Path, kind: str | None = None) -> Source:
    """The samples of an image or audio folder, listed exactly as image_folder / audio_folder list them."""
    kind = kind or detect_kind(root)
    if kind == "image":
        classes, files, labels, splits = list_samples(root, IMAGE_SUFFIXES, "images", key="SRC")
    elif kind == "audio":
        classes, files, labels, splits = list_clips(root, key="SRC")
    else:
        raise DataError(f"--kind: {kind!r} is not a kind of folder to pack; use image or audio")
    return Source(root, kind, classes, files, labels, None if splits is None else splits.tolist())


def plan(sizes: np.ndarray, shard_size: int | None, samples_per_shard: int | None) -> list[tuple[int, int]]:
    """(first, end) sample ranges, one per shard: a shard is closed before its tar would pass either limit
    (a file larger than `shard_size` gets a shard of its own)."""
    # a sample's share of the tar: its header and padded data, then the .cls member's header and block;
    # the tar ends with two zero blocks and is padded to whole records
    footprint = BLOCK + -(-sizes // BLOCK) * BLOCK + 2 * BLOCK
    ranges, first, used = [], 0, 0
    for i, size in enumerate(footprint.tolist()):
        tar_size = -(-(used + size + 2 * BLOCK) // RECORD) * RECORD
        full = (shard_size is not None and tar_size > shard_size) or i - first == samples_per_shard
        if i > first and full:
            ranges.append((first, i))
            first, used = i, 0
        used += size
    if len(sizes) > first:
        ranges.append((first, len(sizes)))
    return ranges


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644  # owner, group: 0 and '' (TarInfo's defaults)
    return info


def write_shard(path: Path, source: Source, first: int, end: int) -> ShardEntry:
    """Shard `path` with samples first..end-1 streamed in; offsets read back from the written tar."""
    names = []
    with path.open("wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for at in range(first, end):
            key, file = KEY.format(at), source.files[at]
            names.append(f"{key}{os.path.splitext(file)[1].lower()}")
            try:
                with (source.root / file).open("rb") as handle:
                    tar.addfile(_member(names[-1], os.fstat(handle.fileno()).st_size), handle)
            except OSError as exc:  # unreadable, or changed size while being packed
                raise DataError(f"SRC: cannot pack {source.root / file}: {exc}") from None
            label = str(source.labels[at]).encode()
            tar.addfile(_member(f"{key}.cls", len(label)), io.BytesIO(label))
    with tarfile.open(path, "r:") as tar:  # where a reader finds each member: TarInfo.offset_data, .size
        members = {info.name: info for info in tar}
    with path.open("rb") as handle:
        digest = sha256_of(handle)
    return ShardEntry(file=path.name, samples=end - first, size=path.stat().st_size, sha256=digest,
                      files=source.files[first:end], offsets=[members[n].offset_data for n in names],
                      sizes=[members[n].size for n in names], labels=source.labels[first:end],
                      splits=None if source.splits is None else source.splits[first:end])


def _empty_out(out: Path, src: Path) -> None:
    if out.resolve().is_relative_to(src.resolve()):
        raise DataError(f"--out: {out} is inside SRC {src}; its shards would be listed as a class — choose a "
                        "folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out: {out} exists and is not an empty folder; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)


def pack(src: Path, out: Path, shard_size: int | None = DEFAULT_SHARD_SIZE, samples_per_shard: int | None = None,
         workers: int = 1, kind: str | None = None,
         on_shard: Callable[[ShardEntry], None] | None = None) -> ShardIndex:
    """Pack the image or audio folder `src` (root/<class>/<file>; `kind` None: whichever it holds more of)
    into tar shards of at most `shard_size` bytes and/or `samples_per_shard` samples, `workers` shards
    written at a time (threads: the work is reading, writing and hashing), plus out/index.json."""
    if (samples_per_shard is not None and samples_per_shard < 1) or workers < 1:
        raise DataError("--samples-per-shard and --workers: at least 1 each")
    source = list_source(src, kind)
    _empty_out(out, src)
    sizes = np.array([os.stat(src / f).st_size for f in source.files] if shard_size else [0] * len(source.files),
                     dtype=np.int64)
    ranges = plan(sizes, shard_size, samples_per_shard)
    shards = []
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(write_shard, out / SHARD_NAME.format(n), source, first, end)
                for n, (first, end) in enumerate(ranges)]
        try:
            for job in jobs:
                shards.append(job.result())
                if on_shard is not None:
                    on_shard(shards[-1])
        finally:  # after an error, shards not yet started are not written
            for job in jobs:
                job.cancel()
    counts = np.bincount(source.labels, minlength=len(source.classes)).tolist()
    index = ShardIndex(kind=source.kind, samples=len(source.files), classes=source.classes, class_counts=counts,
                       source=str(src), shards=shards)  # type: ignore[arg-type]
    partial = out / f".{INDEX}.partial"
    partial.write_text(index.model_dump_json(exclude_none=True))
    os.replace(partial, out / INDEX)
    return index
