"""`dlforge predict PACKAGE --input … --output …` (#30 item 1): a 10,000-row table and a folder of images go
through the serving codec and runtime, one output row per input in input order, the same answers as a real
server; unreadable inputs get an error in their row; mistakes are one `error:` line.

The packages are the prebuilt ones of tests/fixtures/packages_v0 (no training here).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.export.package import load_package
from dlforge.tasks.seq2seq.codec import translate_lines
from tests.serve_helpers import serve_process

V0 = Path(__file__).parent / "fixtures" / "packages_v0"
PHRASES = ["hallo welt wie geht es", "bonjour le monde entier", "hello world how are you", "ciao mondo come stai",
           "guten morgen", "bonne nuit", "good night", "buona notte"]
runner = CliRunner()


def bulk(package: str, *args: str) -> str:
    result = runner.invoke(app, ["predict", str(V0 / package), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def one_error_line(package: str, *args: str) -> str:
    result = runner.invoke(app, ["predict", str(V0 / package), *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("bulk")
    for name in ("langid_rnn", "digits_cnn"):
        shutil.copytree(V0 / name, root / "repo" / name / "1")
    with serve_process(root / "repo", log=root / "server.log") as (url, _):
        yield url


@pytest.mark.serve
def test_ten_thousand_rows_in_order_with_the_servers_labels(tmp_path: Path, server: str) -> None:
    rng = np.random.default_rng(0)
    texts = [f"{PHRASES[i]} {n}" for i, n in zip(rng.integers(0, len(PHRASES), 10_000), range(10_000), strict=True)]
    texts[4321] = ""  # an empty text is that row's error, not the job's
    with (tmp_path / "in.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "body"])
        writer.writerows(enumerate(texts))
    out = tmp_path / "preds.csv"
    assert "wrote" in bulk("langid_rnn", "--input", str(tmp_path / "in.csv"), "--column", "body", "--output", str(out))
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == [str(i) for i in range(1, 10_001)]
    assert rows[4321]["error"] and not rows[4321]["label"] and not any(r["error"] for i, r in enumerate(rows)
                                                                       if i != 4321)
    sample = [i for i in range(0, 10_000, 37) if i != 4321]
    data = [texts[i] for i in sample]
    body = {"inputs": [{"name": "text", "shape": [len(sample)], "datatype": "BYTES", "data": data}]}
    answer = httpx.post(f"{server}/v2/models/langid_rnn/infer", json=body, timeout=60).json()
    served = {o["name"]: o["data"] for o in answer["outputs"]}
    assert [rows[i]["label"] for i in sample] == served["label"]
    probabilities = np.array(served["probabilities"]).reshape(len(sample), -1)
    assert [float(rows[i]["probability"]) for i in sample] == pytest.approx(probabilities.max(axis=1), abs=1e-5)


@pytest.mark.serve
def test_a_folder_of_images_matches_classify_and_a_corrupt_file_is_its_rows_error(tmp_path: Path,
                                                                                   server: str) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "images"
    for i in range(12):
        (folder / str(digits.target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / str(digits.target[i])
                                                                               / f"{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "preds.jsonl"
    bulk("digits_cnn", "--input", str(folder), "--output", str(out), "--top-k", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    assert [r["input"] for r in rows] == names
    broken = next(r for r in rows if r["input"] == "broken.png")
    assert broken["error"] and "label" not in broken
    for row in rows:
        if row["error"] is None:
            assert len(row["top"]) == 2
            with (folder / row["input"]).open("rb") as image:
                served = httpx.post(f"{server}/v2/models/digits_cnn/classify", files={"image": image}, timeout=30)
            assert served.status_code == 200, served.text
            assert served.json()["predictions"][0]["label"] == row["label"]


def test_translations_come_out_in_order_as_dlforge_translate_gives_them(tmp_path: Path) -> None:
    sentences = [str(n) for n in (7, 42, 15, 99, 3, 60)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
    out = tmp_path / "out.csv"
    bulk("num2words", "--input", str(tmp_path / "in.jsonl"), "--output", str(out))
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["translation"] for r in rows] == translate_lines(load_package(V0 / "num2words"), sentences)


def test_bulk_mistakes_are_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("text\nhallo\n")
    (tmp_path / "taken.csv").write_text("keep me\n")
    assert "no such file or folder" in one_error_line("langid_rnn", "--input", str(tmp_path / "nope.csv"),
                                                      "--output", str(tmp_path / "o.csv"))
    assert "exists; choose a new file" in one_error_line("langid_rnn", "--input", str(tmp_path / "in.csv"),
                                                         "--output", str(tmp_path / "taken.csv"))
    assert (tmp_path / "taken.csv").read_text() == "keep me\n"  # nothing overwritten
    assert "needs both --input" in one_error_line("langid_rnn", "--input", str(tmp_path / "in.csv"))
    assert "column" in one_error_line("langid_rnn", "--input", str(tmp_path / "in.csv"), "--column", "body",
                                      "--output", str(tmp_path / "o.csv"))
    assert "takes images: give a folder" in one_error_line("digits_cnn", "--input", str(tmp_path / "in.csv"),
                                                          "--output", str(tmp_path / "o.csv"))
    assert "this is a gan package" in one_error_line("dcgan", "--input", str(tmp_path), "--output",
                                                     str(tmp_path / "o.csv"))


def colour_splits(root: Path) -> Path:
    """train/ val/ test/ folders of 12x12 PNGs in three colours (with noise): a split the run keeps as given."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 30), ("val", 8), ("test", 15)):
        for name, rgb in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 90, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_evaluate_on_the_runs_own_test_folder_reproduces_its_test_metrics(tmp_path: Path) -> None:
    from dlforge.train.run import train_run
    from tests.conftest import tiny_config

    data = colour_splits(tmp_path / "images")
    cfg = tiny_config(data={"dataset": "image_folder", "params": {"path": str(data), "image_size": [12, 12]}},
                      model={"arch": "cnn_small", "params": {"channels": [4], "hidden": 8}},
                      train={"epochs": 2}, export={"enabled": True})
    saved = train_run(cfg, tmp_path / "run")
    result = runner.invoke(app, ["export", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    (data / "test" / "red" / "broken.png").write_bytes(b"\x89PNG broken")  # counted as unreadable, not scored
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run" / "package"), "--data", str(data / "test"),
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "1 inputs could not be read" in result.stderr
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scored["samples"] == saved["samples"] == 45
    assert scored["confusion_matrix"] == saved["confusion_matrix"]
    for key in ("accuracy", "precision", "recall", "f1"):
        assert scored[key] == pytest.approx(saved[key], abs=1e-6), key
    assert scored["loss"] == pytest.approx(saved["loss"], abs=1e-4)
    assert (tmp_path / "eval" / "report" / "confusion_matrix.png").stat().st_size > 1000
    assert "purple is not one of them" in one_error_line_at(tmp_path / "run" / "package", data, "purple")


def one_error_line_at(package: Path, data: Path, extra_label: str) -> str:
    (data / "test" / extra_label).mkdir()
    result = runner.invoke(app, ["evaluate", str(package), "--data", str(data / "test")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_a_denoiser_writes_a_folder_of_images_like_predict_does_one_by_one(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    images = load_digits().images[:5]
    for i, image in enumerate(images):
        (tmp_path / "noisy" / f"set{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(tmp_path / "noisy" / f"set{i % 2}" / f"{i}.png")
    bulk("denoise", "--input", str(tmp_path / "noisy"), "--output", str(tmp_path / "clean"))
    singles = sorted((tmp_path / "noisy").rglob("*.png"))
    bulk("denoise", *map(str, singles), "--out", str(tmp_path / "one_by_one"))
    for path in singles:
        mine = np.asarray(Image.open(tmp_path / "clean" / path.relative_to(tmp_path / "noisy")))
        theirs = np.asarray(Image.open(tmp_path / "one_by_one" / f"{path.stem}.denoised.png"))
        assert mine.shape == theirs.shape and np.abs(mine.astype(int) - theirs.astype(int)).max() <= 1
