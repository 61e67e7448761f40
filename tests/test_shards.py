"""Sharded data sets: `dlforge data pack` writes WebDataset-layout tars and an index; the `shards` data set
reads sample i by seeking into its shard, giving exactly the samples (and the training run) of the folder."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler, Subset
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import DataConfig
from dlforge.data.datasets import DATASETS, DataError, RawData
from dlforge.data.samples import EpochDraws
from dlforge.data.shard_pack import pack, parse_size, plan
from dlforge.data.shards import ShardSamples
from dlforge.data.splits import load_data, peek_input_shape
from tests.audio_helpers import tone_folder


def image_folder(root: Path, per_class: int = 9) -> Path:
    """Three classes of small images told apart by colour: PNGs and JPEGs of several sizes, one grey PNG."""
    rng = np.random.default_rng(0)
    for name, rgb in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (10 + i % 3, 14 - i % 2, 3)
            pixels = np.clip(np.array(rgb) + rng.normal(0, 40, size), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(root / "red" / "grey.png")
    return root


def load(dataset: str, **params: Any) -> RawData:
    entry = DATASETS.get(dataset)
    return entry.load(entry.params.model_validate(params), 7)


def assert_same_samples(folder: RawData, shards: RawData) -> None:
    assert shards.labels == folder.labels and torch.equal(shards.y, folder.y)
    assert shards.preprocessing == folder.preprocessing and shards.input_shape == folder.input_shape
    assert shards.groups == folder.groups
    a, b = folder.dataset(), shards.dataset()
    assert len(a) == len(b)  # type: ignore[arg-type]
    for i in range(len(a)):  # type: ignore[arg-type]
        (x, y), (x2, y2) = a[i], b[i]
        assert y == y2 and torch.equal(x, x2), i


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pack")
    src = image_folder(root / "images")
    pack(src, root / "shards", samples_per_shard=8, workers=2)
    return src, root / "shards"


def test_pack_writes_webdataset_tars_of_the_original_bytes_and_an_index(packed: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    src, out = packed
    index = load_index(out)
    assert (index["kind"], index["samples"], index["classes"]) == ("image", 28, ["blue", "green", "red"])
    assert index["class_counts"] == [9, 9, 10]
    assert [s["samples"] for s in index["shards"]] == [8, 8, 8, 4]
    for shard in index["shards"]:
        data = (out / shard["file"]).read_bytes()
        assert len(data) == shard["size"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
        with tarfile.open(out / shard["file"]) as tar:  # any tar reader: <key>.<ext> + <key>.cls, in order
            members = tar.getmembers()
            names = [m.name for m in members]
            keys = sorted({n.split(".")[0] for n in names})
            assert names[1::2] == [f"{k}.cls" for k in keys] and len(names) == 2 * shard["samples"]
            labels = [int(tar.extractfile(m).read()) for m in members[1::2]]  # type: ignore[union-attr]
        assert labels == shard["labels"]
        for file, offset, size in zip(shard["files"], shard["offsets"], shard["sizes"], strict=True):
            assert data[offset:offset + size] == (src / file).read_bytes()  # stored as is, no re-encoding
    assert index["shards"][0]["files"][:2] == ["blue/00.png", "blue/01.jpg"]  # the folder's sorted order
    again = pack(src, tmp_path / "again", samples_per_shard=8)
    assert [s.sha256 for s in again.shards] == [s["sha256"] for s in index["shards"]]  # deterministic bytes


def load_index(out: Path) -> dict[str, Any]:
    import json

    return json.loads((out / "index.json").read_text())


def test_images_from_shards_equal_the_folders(packed: tuple[Path, Path]) -> None:
    src, out = packed
    for params in ({"image_size": [8, 8]}, {"image_size": [12, 6], "channels": 1}):
        assert_same_samples(load("image_folder", path=str(src), **params), load("shards", path=str(out), **params))
    raw = load("shards", path=str(out), image_size=[8, 8])
    assert raw.samples.describe(0) == "shard-000000.tar:blue/00.png"  # type: ignore[union-attr]


def test_crops_split_folders_and_hash_splits_from_shards_equal_the_folders(tmp_path: Path) -> None:
    src = tmp_path / "images"
    for split, count in (("train", 9), ("val", 3), ("test", 3)):
        image_folder(src / split, per_class=count)
    index = pack(src, tmp_path / "shards", samples_per_shard=10)
    assert index.shards[0].files[0] == "train/blue/00.png" and index.shards[-1].splits == [2] * 8
    params = {"image_size": [8, 8], "resize": "center_crop", "train_crop": {"scale": [0.3, 1]}}
    folder, shards = load("image_folder", path=str(src), **params), load("shards", path=str(tmp_path / "shards"),
                                                                         **params)
    assert_same_samples(folder, shards)  # evaluation: center_crop
    assert np.array_equal(shards.given_split, folder.given_split) and shards.keys == folder.keys
    a, b = EpochDraws(folder.dataset()), EpochDraws(shards.dataset())
    for epoch, i in ((0, 0), (0, 5), (3, 5), (1, 40)):  # training: that epoch's random-resized crop
        assert torch.equal(a[(epoch, i)][0], b[(epoch, i)][0])
    assert not torch.equal(b[(0, 5)][0], b[(3, 5)][0])
    pack(src / "train", tmp_path / "flat-shards")
    cases = (("folders", "stratified", src, tmp_path / "shards"),  # train/ val/ test/ are used as they are
             ("hash", "hash", src / "train", tmp_path / "flat-shards"))  # each file by a hash of its name
    for method, split, folder_path, shards_path in cases:
        bundles = [load_data(DataConfig(dataset=name, params={"path": str(path), "image_size": [8, 8]},
                                        split=split), seed=3)
                   for name, path in (("image_folder", folder_path), ("shards", shards_path))]
        assert bundles[1].facts["split"]["method"] == method
        assert bundles[0].facts["split"] == bundles[1].facts["split"]
        for part in ("train", "val", "test"):
            assert getattr(bundles[0], part).indices == getattr(bundles[1], part).indices


def test_audio_from_shards_equals_the_folders_with_the_same_crops_and_speakers(tmp_path: Path) -> None:
    src = tone_folder(tmp_path / "clips", rate=8000, per_class=3, speakers=3)
    index = pack(src, tmp_path / "shards", shard_size=parse_size("40kB"))
    assert (index.kind, index.samples, index.classes) == ("audio", 18, ["high", "low"])
    assert len(index.shards) > 2 and max(s.size for s in index.shards) <= 40_000
    params = {"sample_rate": 8000, "duration": 0.5, "group_by": "^(spk[0-9])_"}  # clips are 0.3-0.7 s: cropped
    folder, shards = load("audio_folder", path=str(src), **params), load("shards", path=str(tmp_path / "shards"),
                                                                          **params)
    assert_same_samples(folder, shards)
    assert shards.groups is not None and len(set(shards.groups)) == 3
    rows = [f"{f},{f.split('/')[1].split('_')[0]}\n" for shard in index.shards for f in shard.files]
    (tmp_path / "shards" / "speakers.csv").write_text("file,who\n" + "".join(rows))  # beside index.json
    by_csv = load("shards", path=str(tmp_path / "shards"), group_by={"csv": "speakers.csv", "column": "who"})
    assert by_csv.groups == shards.groups
    assert peek_input_shape(DataConfig(dataset="shards", params={"path": str(tmp_path / "shards"),
                                                                 **params})) == (4000,)


def test_shard_size_and_sample_limits() -> None:
    assert [parse_size(s) for s in ("256MB", "1GiB", "500k", "1000", "1.5kB")] == [256_000_000, 2**30, 500_000,
                                                                                   1000, 1500]
    for bad in ("", "12xb", "-3MB", "0"):
        with pytest.raises(DataError, match="--shard-size"):
            parse_size(bad)
    sizes = np.array([100, 6000, 30_000, 100, 100, 100, 100, 100])  # in a tar: 2048, 7680, 31744, 2048, …
    # tars are whole 10240-byte records (the last two blocks ending them): 2048 + 7680 needs two
    assert plan(sizes, 10_240, None) == [(0, 1), (1, 2), (2, 3), (3, 7), (7, 8)]  # an oversized file: its own
    assert plan(sizes, None, 3) == [(0, 3), (3, 6), (6, 8)]
    assert plan(sizes, 100_000, 2) == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_pack_refuses_an_out_folder_in_use_or_inside_src(packed: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = packed
    with pytest.raises(DataError, match="--out: .* exists and is not an empty folder"):
        pack(src, out)
    with pytest.raises(DataError, match="--out: .* is inside SRC"):
        pack(src, src / "shards")
    with pytest.raises(DataError, match="SRC: .* is not a folder"):
        pack(tmp_path / "nope", tmp_path / "out")


def test_cli_pack(tmp_path: Path) -> None:
    src = image_folder(tmp_path / "images", per_class=3)
    result = CliRunner().invoke(app, ["data", "pack", str(src), "--out", str(tmp_path / "out"),
                                      "--shard-size", "25kB", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "packed 10 image files (3 classes) into 2 shards (30.7 kB) in " in result.output
    assert "shard-000000.tar  8 samples  20.5 kB" in result.output
    assert load_index(tmp_path / "out")["samples"] == 10


def copy_of(out: Path, to: Path) -> Path:
    shutil.copytree(out, to)
    return to


def test_a_changed_shard_is_one_error_line_naming_it(packed: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = packed
    bad = copy_of(out, tmp_path / "bad")
    shard = load_index(bad)["shards"][1]
    data = bytearray((bad / shard["file"]).read_bytes())
    data[shard["offsets"][3] + 20] ^= 0xFF  # one byte inside an image
    (bad / shard["file"]).write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        load("shards", path=str(bad))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{bad}/shard-000001.tar: sha256 ")
    assert "differs from index.json" in message
    assert load("shards", path=str(bad), verify=False).samples is not None  # the check can be skipped …
    (bad / shard["file"]).write_bytes(bytes(data[:-1024]))
    with pytest.raises(DataError, match=r"shard-000001.tar: \d+ bytes, but index.json says"):
        load("shards", path=str(bad), verify=False)  # … the size check cannot
    (bad / shard["file"]).unlink()
    with pytest.raises(DataError, match="shard-000001.tar: missing"):
        load("shards", path=str(bad))


def test_a_missing_or_newer_index_is_named(packed: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.params.path: no index.json in .* `dlforge data pack FOLDER --out DIR`"):
        load("shards", path=str(tmp_path))
    newer = copy_of(packed[1], tmp_path / "newer")
    (newer / "index.json").write_text((newer / "index.json").read_text().replace('"version":1', '"version":2'))
    with pytest.raises(DataError, match="format version 2, but this dlforge reads version 1"):
        load("shards", path=str(newer))
    with pytest.raises(DataError, match="data.params.path: nosuchfs://x/y: Protocol not known"):
        load("shards", path="nosuchfs://x/y")


def test_fsspec_urls_file_and_memory(packed: tuple[Path, Path]) -> None:
    src, out = packed
    folder = load("image_folder", path=str(src), image_size=[8, 8])
    assert_same_samples(folder, load("shards", path=out.as_uri(), image_size=[8, 8]))  # file:///…
    memory = fsspec.filesystem("memory")
    try:
        for file in out.iterdir():
            memory.pipe(f"/packed/{file.name}", file.read_bytes())
        shards = load("shards", path="memory://packed", image_size=[8, 8])
        assert_same_samples(folder, shards)
    finally:
        memory.rm("/packed", recursive=True)


def test_file_handles_are_opened_lazily_and_never_pickled(packed: tuple[Path, Path]) -> None:
    import pickle

    samples = load("shards", path=str(packed[1])).samples
    assert isinstance(samples, ShardSamples) and not samples._handles
    samples[0], samples[27]
    assert len(samples._handles) == 2
    copy = pickle.loads(pickle.dumps(samples))  # as a spawned loader worker receives it
    assert not copy._handles and torch.equal(copy[27][0], samples[27][0])


def test_each_rank_reads_a_disjoint_part_of_the_train_split(packed: tuple[Path, Path]) -> None:
    cfg = DataConfig(dataset="shards", params={"path": str(packed[1])}, val_fraction=0.15, test_fraction=0.15)
    train = load_data(cfg, seed=0).train
    assert isinstance(train, Subset) and len(train) % 2 == 0  # no padding: a clean partition
    ranks = [set(DistributedSampler(train, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == set(range(len(train)))
    samples = train.dataset
    assert isinstance(samples, ShardSamples)
    spans = [{(int(samples.shard[train.indices[i]]), int(samples.offsets[train.indices[i]])) for i in r}
             for r in ranks]  # the byte ranges each rank reads
    assert not spans[0] & spans[1] and len(spans[0]) + len(spans[1]) == len(train)


def test_a_training_run_from_shards_equals_one_from_the_folder(packed: tuple[Path, Path], tmp_path: Path) -> None:
    from dlforge.config import parse_config
    from dlforge.train.run import train_run

    src, out = packed
    metrics = {}
    for name, data in (("folder", {"dataset": "image_folder", "params": {"path": str(src)}}),
                       ("shards", {"dataset": "shards", "params": {"path": str(out)}})):
        data["params"]["image_size"] = [8, 8]  # type: ignore[index]
        cfg = parse_config({
            "name": name, "data": {**data, "workers": 1, "val_fraction": 0.15, "test_fraction": 0.15},
            "model": {"arch": "cnn_tiny"}, "augment": [{"hflip": 0.5}],
            "train": {"epochs": 2, "batch_size": 4, "progress": False, "optimizer": {"lr": 0.01}},
            "eval": {"plots": False}})
        metrics[name] = train_run(cfg, tmp_path / name)
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("folder", "shards")]
    assert weights[0] == weights[1]
    assert metrics["folder"]["accuracy"] == metrics["shards"]["accuracy"]


def test_a_packed_image_is_decoded_by_the_folders_reader_and_named_by_its_member() -> None:
    from dlforge.data.datasets import ImageReader
    from dlforge.imagedecode import ImageError

    png = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(png, format="PNG")
    assert ImageReader((2, 2), 3)(png.getvalue(), 0, None, name="s.tar:red/a.png")[0].min() == 1.0
    with pytest.raises(ImageError, match="^s.tar:red/b.png: not an image"):
        ImageReader((2, 2), 3)(b"nope", 0, None, name="s.tar:red/b.png")


@pytest.mark.slow
def test_sigkill_inside_an_epoch_then_resume_from_shards_is_bitwise_exact(tmp_path: Path) -> None:
    """Two processes (one process: tests/test_resume_midepoch.py, the same experiment on the folder)."""
    from tests.test_resume_midepoch import assert_killed_then_resumed_equals_straight, experiment
    from tests.test_resume_midepoch import image_folder as colours

    pack(colours(tmp_path / "images"), tmp_path / "shards", samples_per_shard=16)
    raw = experiment(tmp_path / "images")
    raw["data"] = {**raw["data"], "dataset": "shards", "params": {"path": str(tmp_path / "shards"),
                                                                  "image_size": [12, 12]}}
    assert_killed_then_resumed_equals_straight(tmp_path, raw, 2)
