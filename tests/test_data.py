import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from dlforge.config import DataConfig
from dlforge.data.datasets import DATASETS, DataError
from dlforge.data.errors import SampleError
from dlforge.data.loaders import eval_loader, per_worker_batch, train_loader
from dlforge.data.samples import take
from dlforge.data.splits import load_data
from dlforge.imagedecode import decode_image
from dlforge.preprocessing import ImagePreprocessing
from dlforge.serve.images import preprocess_image


def test_digits_splits_are_stratified_disjoint_and_seeded() -> None:
    a = load_data(DataConfig(), seed=0)
    b = load_data(DataConfig(), seed=0)
    c = load_data(DataConfig(), seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    train_rows = {tuple(r.flatten().tolist()) for r in a.train.tensors[0]}
    overlap = sum(tuple(r.flatten().tolist()) in train_rows for r in a.test.tensors[0])
    assert overlap < 5  # digits has a handful of exact duplicate images, nothing more
    counts = torch.bincount(a.test.tensors[1], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 29  # 270 / 10 classes, stratified
    assert a.train.tensors[0].max() <= 1.0 and a.input_shape == (1, 8, 8)


def test_normalisation_stats_come_from_the_train_split() -> None:
    bundle = load_data(DataConfig(), seed=0)
    x = bundle.train.tensors[0]
    assert bundle.preprocessing.mean == pytest.approx([x.mean().item()], rel=1e-5)
    assert bundle.preprocessing.std == pytest.approx([x.std().item()], rel=1e-4)


def write_image_folder(root: Path, per_class: int = 12) -> None:
    rng = np.random.default_rng(0)
    for name, base in (("cat", 30), ("dog", 220)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder_resizes_labels_and_reports_corrupt_files(tmp_path: Path, caplog) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    cfg = DataConfig(dataset="image_folder", params={"path": str(tmp_path), "image_size": [16, 16]})
    bundle = load_data(cfg, seed=0)
    assert bundle.labels == ["cat", "dog"]
    assert bundle.input_shape == (3, 16, 16)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 25  # listed; read when a loader asks
    parts = [take(split) for split in (bundle.train, bundle.val, bundle.test)]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    assert "broken.png" in caplog.text  # read in its turn: replaced by the next file, with a warning
    assert x.shape == (25, 3, 16, 16) and x[y == 0].mean() < 0.3 and x[y == 1].mean() > 0.7
    assert bundle.preprocessing.channel_order == "RGB"


def test_an_unreadable_image_stops_training_with_one_line_from_a_worker(tmp_path: Path) -> None:
    write_image_folder(tmp_path, per_class=4)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png at all")
    cfg = DataConfig(dataset="image_folder", params={"path": str(tmp_path), "skip_unreadable": False})
    raw = DATASETS.get("image_folder").load(DATASETS.get("image_folder").params.model_validate(cfg.params), 0)
    loader = DataLoader(raw.dataset(), batch_size=4, num_workers=1)
    with pytest.raises(SampleError) as caught:
        list(loader)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'dog' / 'broken.png'}: not an image") and "Traceback" not in message
    assert message.endswith("set data.params.skip_unreadable: true")


def test_lazy_statistics_match_the_materialised_train_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    bundle = load_data(DataConfig(dataset="image_folder", params={"path": str(tmp_path)}), seed=0)
    x = take(bundle.train)[0]
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.transpose(0, 1).reshape(3, -1).std(dim=1).tolist()
    assert bundle.preprocessing.mean == pytest.approx(mean, rel=1e-5)
    assert bundle.preprocessing.std == pytest.approx(std, rel=1e-4)
    assert bundle.facts["statistics_samples"] == len(bundle.train)
    assert bundle.facts["split"] == {"method": "stratified", "train": len(bundle.train), "val": len(bundle.val),
                                     "test": len(bundle.test)}
    counts = bundle.facts["class_counts"]
    assert counts["train"] == [8, 8] and sum(map(sum, counts.values())) == 24  # from the labels, no sample read


def test_split_folders_are_used_as_they_are_and_a_missing_one_is_carved_from_train(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", per_class=10)
    write_image_folder(tmp_path / "test", per_class=3)
    bundle = load_data(DataConfig(dataset="image_folder", params={"path": str(tmp_path)}, val_fraction=0.2), 0)
    assert bundle.labels == ["cat", "dog"]
    test_files = {bundle.test.dataset.path(i).relative_to(tmp_path).parts[0] for i in bundle.test.indices}
    val_files = {bundle.val.dataset.path(i).relative_to(tmp_path).parts[0] for i in bundle.val.indices}
    assert test_files == {"test"} and len(bundle.test) == 6  # the test/ folder, whole
    assert val_files == {"train"} and len(bundle.val) == 4  # no val/: 20% of train/, stratified
    assert bundle.facts["split"] == {"method": "folders", "train": 16, "val": 4, "test": 6}
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "wolf")
    with pytest.raises(DataError, match="every split folder needs the same class folders"):
        load_data(DataConfig(dataset="image_folder", params={"path": str(tmp_path)}), 0)


def test_a_hash_split_keeps_every_file_in_its_split_when_data_is_added(tmp_path: Path) -> None:
    write_image_folder(tmp_path, per_class=30)
    cfg = DataConfig(dataset="image_folder", params={"path": str(tmp_path)}, split="hash")

    def members(bundle) -> dict[str, set[str]]:
        return {name: {str(getattr(bundle, name).dataset.path(i)) for i in getattr(bundle, name).indices}
                for name in ("train", "val", "test")}

    before = members(load_data(cfg, seed=0))
    assert all(before.values()) and sum(map(len, before.values())) == 60
    write_image_folder(tmp_path / "more", per_class=30)
    (tmp_path / "more" / "cat").rename(tmp_path / "bird")  # a new class of 30 files
    shutil.rmtree(tmp_path / "more")
    after = members(load_data(cfg, seed=0))
    for name in before:
        assert before[name] <= after[name]  # nothing moved between splits
    assert members(load_data(cfg, seed=1)) != after  # the run seed chooses the split


def test_image_folder_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.params.path: .* is not a folder"):
        load_data(DataConfig(dataset="image_folder", params={"path": str(tmp_path / "nope")}), 0)


def test_synthetic_tokens_are_integer_inputs() -> None:
    bundle = load_data(DataConfig(dataset="synthetic", params={"kind": "tokens", "shape": [7]}), 0)
    assert bundle.integer_input and bundle.train.tensors[0].dtype == torch.long
    assert "mean" not in bundle.preprocessing.model_dump()


def test_global_batch_splits_across_workers_and_shards_cover_everything() -> None:
    bundle = load_data(DataConfig(), seed=0)
    assert per_worker_batch(64, 2) == 32
    with pytest.raises(ValueError, match="must divide evenly"):
        per_worker_batch(63, 2)
    shards = [eval_loader(bundle.test, 50, r, 3) for r in range(3)]
    indices = sorted(i for shard in shards for batch in shard.batch_sampler for i in batch)
    assert indices == list(range(len(bundle.test)))  # every sample once: no padding, no duplicates
    assert len({len(shard) for shard in shards}) == 1  # same batch count on every rank (FSDP forwards)
    loader = train_loader(bundle.train, 64, 0, 1, seed=0)
    loader.sampler.set_epoch(1)
    first = next(iter(loader))[1]
    loader.sampler.set_epoch(1)
    assert torch.equal(first, next(iter(loader))[1])


def wide_image(path: Path) -> None:
    """40x20: black outer quarters, a white centre 20x20 square."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 10:30] = 255
    Image.fromarray(pixels).save(path)


def test_center_crop_keeps_the_aspect_ratio_for_evaluation_and_serving(tmp_path: Path) -> None:
    wide_image(tmp_path / "wide.png")
    stretched = decode_image(tmp_path / "wide.png", (8, 8), 3)
    centred = decode_image(tmp_path / "wide.png", (8, 8), 3, fit="center_crop")
    assert stretched[:, :, 0].max() == 0 and centred.min() > 0.8  # the black margins are cropped away
    prep = ImagePreprocessing(size=(8, 8), channels=3, channel_order="RGB", scale=1 / 255, resize="center_crop")
    served = preprocess_image((tmp_path / "wide.png").read_bytes(), prep)
    assert np.array_equal(served[0], centred)


def test_random_crops_are_drawn_per_epoch_and_sample_and_repeat_exactly(tmp_path: Path) -> None:
    write_image_folder(tmp_path, per_class=6)
    for name in ("cat", "dog"):
        wide_image(tmp_path / name / "wide.png")
    params = {"path": str(tmp_path), "image_size": [8, 8], "train_crop": {"scale": [0.1, 0.3]}}
    bundle = load_data(DataConfig(dataset="image_folder", params=params), seed=0)

    def epoch_of(epoch: int, workers: int) -> dict[int, Tensor]:
        loader = train_loader(bundle.train, 4, 0, 1, seed=0, workers=workers)
        loader.sampler.set_epoch(epoch)
        keys = [i for _, i in loader.sampler]
        xs = torch.cat([x for x, _ in loader])
        return dict(zip(keys, xs, strict=True))

    one, again, two = epoch_of(1, 0), epoch_of(1, 2), epoch_of(2, 2)
    assert all(torch.equal(one[k], again[k]) for k in one)  # the same draws in any worker
    assert any(not torch.equal(one[k], two[k]) for k in one)  # other crops the next epoch
    x, _ = take(bundle.train)  # evaluation (and statistics) decode without random crops
    assert torch.equal(x, take(bundle.train)[0])


def test_each_rank_reads_a_disjoint_part_of_the_train_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path, per_class=15)
    bundle = load_data(DataConfig(dataset="image_folder", params={"path": str(tmp_path)}), seed=0)
    for epoch in (1, 2):
        parts = []
        for rank in (0, 1):
            loader = train_loader(bundle.train, 4, rank, 2, seed=0)
            loader.sampler.set_epoch(epoch)
            parts.append({i for _, i in loader.sampler})
        assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(len(bundle.train)))
