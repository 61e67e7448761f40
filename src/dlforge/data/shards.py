"""The `shards` dataset: an image or audio folder packed into tar shards (`dlforge data pack`), read by index.

A packed folder holds tar files in the WebDataset layout (`<key>.<ext>`: the original file's bytes,
`<key>.cls`: its class index), which webdataset, timm and LitData tools read as they are, and
`index.json`: the kind, the classes and, per shard, its file, size and sha256 and, per sample, its source
file, the byte range of its member inside the tar (tarfile's `TarInfo.offset_data` / `size`) and its label.

With those byte ranges sample i is one seek and one read, so this is a map-style dataset like a folder:
the same splits, samplers, distributed partitioning and mid-epoch resume. The index keeps the folder's
sorted order and the folder's decoders run on the same bytes, so a run on the shards sees exactly the
samples a run on the folder sees. Reading goes through fsspec: `path` may be a local folder or a URL
(file://, s3://, gs://, https://, memory://). Why not a streaming-only format: docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dlforge.audio_io import AudioError
from dlforge.cores import usable_cores
from dlforge.data.audio import AudioSettings, ClipReader, GroupByCsv, group_of, group_table, read_group_table
from dlforge.data.datasets import (
    DATASETS,
    IMAGE_TASKS,
    DataError,
    DatasetEntry,
    ImageSettings,
    RawData,
)
from dlforge.data.errors import SampleError
from dlforge.data.samples import LazySamples
from dlforge.imagedecode import ImageError

FORMAT, VERSION, INDEX = "dlforge-shards", 1, "index.json"
MAX_OPEN = 64  # shard files one process keeps open (least recently used closed first)
HASH_BLOCK = 1 << 20


class ShardEntry(BaseModel):
    """One tar file and, column by column, the samples in it (a column per field keeps index.json small)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    samples: int = Field(ge=1)
    size: int = Field(ge=0, description="bytes")
    sha256: str
    files: list[str] = Field(description="each sample's source file, relative to the packed folder")
    offsets: list[int] = Field(description="where each sample's bytes start in the tar (TarInfo.offset_data)")
    sizes: list[int] = Field(description="how many bytes each sample has (TarInfo.size)")
    labels: list[int] = Field(description="each sample's class index")
    splits: list[int] | None = Field(None, description="each sample's split folder (0 train, 1 val, 2 test), "
                                                       "when the packed folder had train/ val/ test/")

    @model_validator(mode="after")
    def _columns(self) -> ShardEntry:
        for name in ("files", "offsets", "sizes", "labels", "splits"):
            if getattr(self, name) is not None and len(getattr(self, name)) != self.samples:
                raise ValueError(f"shard {self.file}: {len(getattr(self, name))} {name} for {self.samples} samples")
        return self


class ShardIndex(BaseModel):
    """index.json: what a packed folder holds and where each sample is."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["dlforge-shards"] = "dlforge-shards"
    version: int = VERSION
    kind: Literal["image", "audio"]
    samples: int
    classes: list[str]
    class_counts: list[int]
    source: str = Field("", description="the folder that was packed (for people; never read)")
    shards: list[ShardEntry]

    @model_validator(mode="after")
    def _counts(self) -> ShardIndex:
        if sum(s.samples for s in self.shards) != self.samples or sum(self.class_counts) != self.samples:
            raise ValueError(f"samples: {self.samples}, but the shards hold {sum(s.samples for s in self.shards)} "
                             f"and class_counts add up to {sum(self.class_counts)}")
        if len(self.class_counts) != len(self.classes):
            raise ValueError(f"class_counts: {len(self.class_counts)} counts for {len(self.classes)} classes")
        wrong = [s.file for s in self.shards if min(s.labels) < 0 or max(s.labels) >= len(self.classes)]
        if wrong:
            raise ValueError(f"labels: shard {wrong[0]} has labels outside 0..{len(self.classes) - 1}")
        if len({s.splits is None for s in self.shards}) > 1:
            raise ValueError("splits: some shards have split folders and others do not")
        return self

    def column(self, name: str, dtype: type) -> np.ndarray:
        """One per-sample field of every shard, in sample order."""
        return np.concatenate([np.asarray(getattr(s, name), dtype=dtype) for s in self.shards])


def parse_index(raw: Any, where: str) -> ShardIndex:
    """A validated index; the format and version are checked first, so a newer index says so."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{where}: not a dlforge shard index (expected \"format\": \"{FORMAT}\")")
    if raw.get("version") != VERSION:
        raise DataError(f"{where}: format version {raw.get('version')!r}, but this dlforge reads version {VERSION} "
                        "— repack the folder with this dlforge (dlforge data pack)")
    try:
        return ShardIndex.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(map(str, first["loc"])) or "index"
        raise DataError(f"{where}: {key}: {first['msg']} — repack the folder (dlforge data pack)") from None


def open_index(url: str) -> tuple[Any, str, ShardIndex]:
    """(fsspec filesystem, the folder's path on it, its index) for a local folder or a URL."""
    from fsspec.core import url_to_fs

    url = url.rstrip("/")
    try:
        fs, root = url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise DataError(f"data.params.path: {url}: {exc}") from None
    root = root.rstrip("/")
    try:
        with fs.open(f"{root}/{INDEX}", "rb") as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"data.params.path: no {INDEX} in {url} — make one with "
                        f"`dlforge data pack FOLDER --out DIR` and point data.params.path at DIR") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"data.params.path: cannot read {url}/{INDEX} ({exc})") from None
    return fs, root, parse_index(raw, f"{url}/{INDEX}")


def sha256_of(handle: Any) -> str:
    """The hex sha256 of a binary file object, read in blocks (memory stays flat)."""
    digest = hashlib.sha256()
    while block := handle.read(HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def check_shards(fs: Any, root: str, url: str, index: ShardIndex, verify: bool) -> None:
    """Every shard is there with its size (one listing); with `verify`, its sha256 too (hashed in threads:
    hashlib releases the GIL). A shard that differs is one DataError naming it."""
    listing = {entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry for entry in fs.ls(root, detail=True)}
    for shard in index.shards:
        found = listing.get(shard.file)
        if found is None or found.get("type") == "directory":
            raise DataError(f"{url}/{shard.file}: missing (index.json lists it) — copy the whole packed folder")
        if found.get("size") != shard.size:
            raise DataError(f"{url}/{shard.file}: {found.get('size')} bytes, but index.json says {shard.size} "
                            "— the shard is incomplete or was replaced; copy it again or repack")
    if not verify:
        return

    def digest(shard: ShardEntry) -> str:
        with fs.open(f"{root}/{shard.file}", "rb") as handle:
            return sha256_of(handle)

    with ThreadPoolExecutor(max(1, min(8, usable_cores()))) as pool:
        for shard, found_digest in zip(index.shards, pool.map(digest, index.shards), strict=True):
            if found_digest != shard.sha256:
                raise DataError(f"{url}/{shard.file}: sha256 {found_digest[:16]}… differs from index.json's "
                                f"{shard.sha256[:16]}… — the shard is corrupt or was changed after packing; "
                                "copy it again or repack (data.params.verify: false skips this check)")


class ShardSamples(LazySamples):
    """Samples read from tar shards by byte range: seek to the member, read it, decode it as the folder's
    reader would (`decode(data, index, draw, name=…)`: ImageReader, ClipReader).

    The index lives in numpy arrays (a few bytes a sample; forked workers share the pages). File handles are
    opened lazily in the process that reads — each loader worker has its own, never pickled.
    """

    def __init__(self, fs: Any, root: str, index: ShardIndex, decode: Callable[..., np.ndarray],
                 errors: tuple[type[Exception], ...], skip_unreadable: bool) -> None:
        super().__init__(index.column("labels", np.int64), errors, skip_unreadable)
        self.fs, self.root, self.decode = fs, root, decode
        self.shard_files = [s.file for s in index.shards]
        self.shard = np.repeat(np.arange(len(index.shards), dtype=np.int32), [s.samples for s in index.shards])
        self.offsets, self.sizes = index.column("offsets", np.int64), index.column("sizes", np.int64)
        self.files = np.array([f.encode() for s in index.shards for f in s.files], dtype=np.bytes_)
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._pid = os.getpid()

    def describe(self, at: int) -> str:
        return f"{self.shard_files[self.shard[at]]}:{self.files[at].decode()}"

    def load(self, at: int, index: int, draw: int | None) -> np.ndarray:
        return self.decode(self.read(at), index, draw, name=self.describe(at))

    def read(self, at: int) -> bytes:
        """Sample `at`'s bytes as packed (the original file)."""
        handle = self._handle(int(self.shard[at]))
        handle.seek(int(self.offsets[at]))
        data = handle.read(int(self.sizes[at]))
        if len(data) != self.sizes[at]:
            raise SampleError(f"{self.describe(at)}: read {len(data)} of {self.sizes[at]} bytes — the shard "
                              "changed after it was checked; copy it again or repack")
        return bytes(data)

    def _handle(self, shard: int) -> Any:
        if self._pid != os.getpid():  # a forked loader worker: the parent's handles are not this process's
            self._handles, self._pid = OrderedDict(), os.getpid()
        handle = self._handles.get(shard)
        if handle is not None:
            self._handles.move_to_end(shard)
            return handle
        # no read-ahead cache: a random sample is one ranged read, not a block of its neighbours
        handle = self.fs.open(f"{self.root}/{self.shard_files[shard]}", "rb", cache_type="none")
        self._handles[shard] = handle
        if len(self._handles) > MAX_OPEN:
            self._handles.popitem(last=False)[1].close()
        return handle

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": OrderedDict()}


class ShardsParams(ImageSettings, AudioSettings):
    """The folder data set's settings for the kind the index holds (images: image_size, channels, resize,
    train_crop; audio: sample_rate, duration, mix_channels, resample, group_by)."""

    path: str = Field(description="the folder holding index.json: a local path or an fsspec URL "
                                  "(file://…, s3://…, gs://…; remote filesystems need their fsspec package)")
    skip_unreadable: bool | None = Field(None, description="replace a sample that cannot be decoded by the next "
                                                           "one, with a warning (default: as image_folder / "
                                                           "audio_folder do — images true, audio false)")
    verify: bool = Field(True, description="check every shard's sha256 when the data set is loaded (sizes are "
                                           "always checked); false saves reading huge remote data twice")


def load_shards(p: ShardsParams, seed: int) -> RawData:
    """The index (checked against the shards); each sample is read and decoded when a loader asks for it."""
    fs, root, index = open_index(p.path)
    check_shards(fs, root, p.path.rstrip("/"), index, p.verify)
    files = [file for shard in index.shards for file in shard.files]  # keys for data.split: hash, as folders
    given = index.column("splits", np.int8) if index.shards[0].splits is not None else None
    if index.kind == "image":
        skip = True if p.skip_unreadable is None else p.skip_unreadable
        samples = ShardSamples(fs, root, index, p.reader(seed), (ImageError,), skip)
        return RawData(torch.empty(0), torch.tensor(samples.targets), index.classes, p.preprocessing(),
                       samples=samples, sample_shape=(p.channels, *p.image_size), keys=files, given_split=given)
    fmt = p.audio_format()
    skip = False if p.skip_unreadable is None else p.skip_unreadable
    samples = ShardSamples(fs, root, index, ClipReader(fmt, seed), (AudioError,), skip)
    return RawData(torch.empty(0), torch.tensor(samples.targets), index.classes, fmt.as_preprocessing(),
                   groups=_groups(p, fs, root, files), samples=samples, sample_shape=(fmt.samples,), keys=files,
                   given_split=given)


def _groups(p: ShardsParams, fs: Any, root: str, files: list[str]) -> list[str] | None:
    """Each clip's group (data.params.group_by) from its source path, as audio_folder finds it."""
    if p.group_by is None:
        return None
    table: dict[str, str] = {}
    if isinstance(p.group_by, GroupByCsv) and p.group_by.csv.is_absolute():
        table = read_group_table(Path("/"), p.group_by)
    elif isinstance(p.group_by, GroupByCsv):  # relative: beside index.json, read like the shards
        where = f"{root}/{p.group_by.csv.as_posix()}"
        try:
            with fs.open(where, "rt", newline="") as handle:
                table = group_table(handle, where, p.group_by)
        except OSError as exc:
            raise DataError(f"data.params.group_by.csv: cannot read {where}: {exc}") from None
    return [group_of(file, p.group_by, table) for file in files]


def shards_shape(p: ShardsParams) -> tuple[int, ...]:
    """One sample's shape: the kind comes from index.json (read, not checked against the shards)."""
    _, _, index = open_index(p.path)
    return (p.channels, *p.image_size) if index.kind == "image" else (p.audio_format().samples,)


DATASETS.add("shards", DatasetEntry(ShardsParams, load_shards,  # type: ignore[arg-type]
                                    "tar shards + index.json from `dlforge data pack` (local or fsspec URL)",
                                    shards_shape, IMAGE_TASKS))  # type: ignore[arg-type]
