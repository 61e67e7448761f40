"""Text classification: datasets, padding invariance, and one tiny run end to end — train, export with
parity on real validation texts, `dlforge predict --text`, and a real server taking raw UTF-8 strings."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError, DataConfig, ModelConfig, parse_config
from dlforge.data.datasets import DATASETS, DataError
from dlforge.data.samples import take
from dlforge.data.splits import load_data, split_indices
from dlforge.experiment import check_experiment
from dlforge.export.package import export_run, load_package
from dlforge.nn import build_model
from dlforge.nn.sequence import StepConv
from dlforge.serve.batcher import Batcher
from dlforge.serve.protocol import HEADER_LENGTH, parse_response_body
from dlforge.serve.settings import Settings
from dlforge.serve.tensors import encode_binary
from dlforge.tasks.classification.predict import predict_files
from dlforge.text import tokenizer_from_bytes
from dlforge.train.run import train_run
from tests.serve_helpers import CHROMIUM, NO_CHROMIUM, artifacts_dir, browser_page, running

runner = CliRunner()
TOKENIZER = {"kind": "char", "max_length": 40}
LANGID = {"dataset": "langid", "params": {"languages": ["de", "en", "fr", "it"], "per_language": 60,
                                          "vocabulary": 200, "tokenizer": TOKENIZER}}


# --- padding never changes a prediction ------------------------------------------------------------
def _padded_pairs(net: torch.nn.Module, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 3, 7, width - 4])
    ids = torch.randint(2, 30, (4, width), generator=gen)
    ids[torch.arange(width)[None] >= lengths[:, None]] = 0
    with torch.no_grad():
        alone = torch.cat([net(ids[i : i + 1, : int(n)]) for i, n in enumerate(lengths)])
        return alone, net(ids)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_padding_never_changes_an_rnn_prediction(cell: str, pooling: str) -> None:
    torch.manual_seed(0)
    model = ModelConfig(arch="text_rnn", params={"cell": cell, "pooling": pooling, "num_layers": 2,
                                                 "embedding_dim": 8, "hidden": 8, "vocab_size": 30})
    net = build_model(model, (16,), 3, integer_input=True, pad_id=0).eval()
    alone, padded = _padded_pairs(net, 16)
    assert torch.allclose(alone, padded, atol=1e-5)


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_padding_never_changes_a_text_cnn_prediction(kernel: int, pooling: str) -> None:
    """Past a text's end a convolution reads its learned `outside` vector whether that is padding or the
    batch's edge (an even kernel reaches unevenly); trained-looking, non-zero vectors here."""
    torch.manual_seed(0)
    model = ModelConfig(arch="text_cnn_tiny", params={"kernel": kernel, "pooling": pooling, "channels": [8, 8]})
    net = build_model(model, (16,), 3, integer_input=True, pad_id=0, vocab_size=30).eval()
    convs = [m for m in net.modules() if isinstance(m, StepConv)]
    assert len(convs) == 2
    for conv in convs:
        torch.nn.init.normal_(conv.outside)
    alone, padded = _padded_pairs(net, 16)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_padding_never_changes_a_transformer_prediction() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="text_transformer_tiny"), (16,), 3, True, pad_id=0, vocab_size=30).eval()
    alone, padded = _padded_pairs(net, 16)
    assert torch.allclose(alone, padded, atol=1e-5)


@pytest.mark.parametrize("boundary", [True, False])
def test_padding_never_changes_a_text_ngram_prediction(boundary: bool) -> None:
    """An n-gram touching padding never counts; with `boundary` the first step past the text reads the same
    boundary symbol whether it is padding or the batch's edge."""
    torch.manual_seed(0)
    model = ModelConfig(arch="text_ngram_tiny", params={"boundary": boundary, "hidden": 8})
    net = build_model(model, (16,), 3, integer_input=True, pad_id=0).eval()
    alone, padded = _padded_pairs(net, 16)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_without_a_pad_id_token_models_behave_as_before() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="rnn_tiny", params={"vocab_size": 30}), (16,), 3, True).eval()
    ids = torch.randint(0, 30, (2, 16))
    ids[:, 8:] = 0  # id 0 is a real token for synthetic data: it must count
    with torch.no_grad():
        assert not torch.allclose(net(ids), net(ids[:, :8]))


# --- datasets ----------------------------------------------------------------------------------------
def _write_csv(path: Path) -> Path:
    rows = ["text,label"] + [f"{w} {w},{lang}" for lang, words in
                             {"en": ["the", "and", "cat", "dog"], "de": ["der", "und", "katze", "hund"]}.items()
                             for w in words * 5]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_text_csv_jsonl_and_folder_load_with_seeded_stratified_splits(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "data.csv")
    lines = csv.read_text().splitlines()[1:]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps({"t": r.split(",")[0], "y": r.split(",")[1]}) + "\n" for r in lines))
    for i, row in enumerate(lines):
        (tmp_path / "folder" / row.split(",")[1]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / row.split(",")[1] / f"{i:03d}.txt").write_text(row.split(",")[0])
    configs = [{"dataset": "text_csv", "params": {"path": str(csv), "tokenizer": TOKENIZER}},
               {"dataset": "jsonl", "params": {"path": str(jsonl), "text_field": "t", "label_field": "y",
                                               "tokenizer": TOKENIZER}},
               {"dataset": "text_folder", "params": {"path": str(tmp_path / "folder"), "tokenizer": TOKENIZER}}]
    bundles = [load_data(DataConfig.model_validate({**c, "val_fraction": 0.25, "test_fraction": 0.25}), 3)
               for c in configs]
    for b in bundles:
        assert b.labels == ["de", "en"] and b.integer_input and b.preprocessing.kind == "text"
        assert take(b.train)[1].bincount().tolist() == [10, 10]  # stratified
        assert set(b.artifacts) == {"tokenizer.json"}
    assert torch.equal(take(bundles[0].test)[0], take(bundles[1].test)[0])  # same rows, same seed: same split


def test_the_tokenizer_learns_from_the_train_split_only() -> None:
    cfg = DataConfig.model_validate(LANGID)
    bundle = load_data(cfg, 0)
    entry = DATASETS.get("langid")
    raw = entry.load(entry.params.model_validate(cfg.params), 0)
    train_idx, _, _ = split_indices(raw.y, cfg.val_fraction, cfg.test_fraction, 0)
    assert raw.texts is not None
    train_chars = {c for i in train_idx.tolist() for c in raw.texts[i].lower()}
    vocab = set(tokenizer_from_bytes(bundle.artifacts["tokenizer.json"]).get_vocab()) - {"[PAD]", "[UNK]"}
    assert vocab == train_chars


def test_bad_text_data_is_reported_with_its_key(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "data.csv")
    with pytest.raises(DataError, match=r"data.params.text_column: no column 'sentence' .* \(columns: text, label\)"):
        load_data(DataConfig.model_validate({"dataset": "text_csv", "params": {"path": str(csv),
                                                                               "text_column": "sentence"}}), 0)
    with pytest.raises(ConfigError, match=r"data.params.tokenizer.kind: Input should be 'char', 'word', 'bpe'"):
        check_experiment(parse_config({"data": {"dataset": "langid", "params": {"tokenizer": {"kind": "bytes"}}},
                                       "model": {"arch": "text_rnn"}}))


# --- batching texts of different lengths ---------------------------------------------------------------
def test_requests_of_different_lengths_share_one_padded_batch() -> None:
    seen: list[tuple[int, ...]] = []

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(batch["ids"].shape)
        return {"n": (batch["ids"] != 0).sum(axis=1)}

    async def two_requests() -> list[dict[str, np.ndarray]]:
        # a huge delay: only a full batch (2 rows) flushes, so both lengths must share it
        batcher = Batcher(run, max_batch_size=2, max_queue_delay_ms=60_000, flush_when_idle=False, pad={"ids": 0})
        await batcher.start()
        short, long = np.array([[5, 6]]), np.array([[5, 6, 7, 8, 9]])
        replies = await asyncio.gather(batcher.submit({"ids": short}), batcher.submit({"ids": long}))
        await batcher.stop()
        return replies

    first, second = asyncio.run(asyncio.wait_for(two_requests(), 10))
    assert seen == [(2, 5)] and first["n"].tolist() == [2] and second["n"].tolist() == [5]


# --- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = check_experiment(parse_config({
        "name": "langid_tiny", "data": LANGID, "model": {"arch": "text_rnn_tiny"},
        "train": {"epochs": 3, "batch_size": 32, "progress": False, "optimizer": {"lr": 0.01}},
        "eval": {"plots": False}}))
    run_dir = tmp_path_factory.mktemp("text") / "run"
    train_run(cfg, run_dir)
    assert (run_dir / "tokenizer.json").is_file()
    return export_run(run_dir)


PHRASES = ["der hund und die katze", "the cat and the dog", "le chat et le chien", "il gatto e il cane"]


@pytest.mark.slow
def test_the_package_keeps_the_hashed_tokenizer_and_its_parity_on_validation_texts(text_package: Path) -> None:
    m = load_package(text_package).manifest
    assert "tokenizer.json" in m.files and m.preprocessing.tokenizer == "tokenizer.json"
    assert m.inputs[0].datatype == "INT64" and m.inputs[0].shape == [-1, -1]
    assert m.onnx.parity_samples > 0 and m.onnx.parity_max_abs_diff <= m.onnx.tolerance
    (text_package / "tokenizer.json").write_text((text_package / "tokenizer.json").read_text() + " ")
    with pytest.raises(Exception, match="tokenizer.json: sha256/size mismatch"):
        load_package(text_package)
    (text_package / "tokenizer.json").write_text((text_package / "tokenizer.json").read_text()[:-1])


def _served(url: str, body: bytes | dict, headers: dict[str, str] | None = None) -> httpx.Response:
    kw = {"json": body} if isinstance(body, dict) else {"content": body}
    return httpx.post(f"{url}/v2/models/langid_tiny/infer", headers=headers or {}, timeout=30, **kw)


def _binary(texts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    blob = encode_binary(np.array(texts, dtype=object), "BYTES")
    header = json.dumps({"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + blob, {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


@pytest.mark.slow
@pytest.mark.serve
def test_predict_and_the_server_agree_on_raw_strings(text_package: Path, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text(PHRASES[0])
    result = runner.invoke(app, ["predict", str(text_package), str(tmp_path / "one.txt"), "--json", "-k", "1",
                                 *[a for p in PHRASES[1:] for a in ("--text", p)]])
    assert result.exit_code == 0, result.output
    predicted = [row["top"][0]["label"] for row in json.loads(result.output)]
    assert predicted == [p.top[0][0] for p in predict_files(load_package(text_package), [], 1, texts=PHRASES)]
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # not text: named as such, not "not UTF-8"
    wrong = runner.invoke(app, ["predict", str(text_package), str(tmp_path / "photo.png")])
    assert wrong.exit_code == 2 and "takes text: pass .txt files" in wrong.output, wrong.output
    with running(Settings(path=text_package)) as (url, _):
        meta = httpx.get(f"{url}/v2/models/langid_tiny").json()
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        card = httpx.get(f"{url}/v2/models/langid_tiny/card").json()  # the playground shows what clients send
        assert card["inputs"] == meta["inputs"] and card["graph_inputs"][0]["datatype"] == "INT64"
        reply = _served(url, {"inputs": [{"name": "text", "shape": [4], "datatype": "BYTES", "data": PHRASES}]})
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: o for o in reply.json()["outputs"]}
        assert outputs["label"]["data"] == predicted and outputs["probabilities"]["shape"] == [4, 4]
        body, headers = _binary([p.encode() for p in PHRASES])
        reply = _served(url, body, headers)
        _, arrays = parse_response_body(reply.content, int(reply.headers[HEADER_LENGTH]))
        assert [b.decode() for b in arrays["label"].tolist()] == predicted
        one = httpx.post(f"{url}/v2/models/langid_tiny/classify", data={"text": PHRASES[1]}, timeout=30).json()
        assert one["predictions"][0]["label"] == predicted[1]


@pytest.mark.slow
@pytest.mark.serve
def test_bad_text_gets_a_clear_400(text_package: Path) -> None:
    def text_input(data: list, datatype: str = "BYTES") -> dict:
        return {"inputs": [{"name": "text", "shape": [len(data)], "datatype": datatype, "data": data}]}

    with running(Settings(path=text_package, grpc_port=0, max_batch_rows=3)) as (url, app):
        cases = [
            (text_input(["ok", ""]), "element 1|text 1 has no tokens"),
            (text_input(["x" * 41]), "has 41 tokens; this model takes at most 40"),
            (text_input([1, 2], "INT64"), "datatype must be BYTES"),
            (text_input([]), "empty batch dimension"),  # the limits of issue 17 hold for text too
            (text_input(["a", "b", "c", "d"]), "4 rows is over this model's limit of 3"),
        ]
        for body, message in cases:
            reply = _served(url, body)
            assert reply.status_code == 400 and re.search(message, reply.json()["error"]), reply.text
        body, headers = _binary([b"ok", b"\xff\xfe bad"])
        reply = _served(url, body, headers)
        assert reply.status_code == 400 and "element 1 is not valid UTF-8" in reply.json()["error"]
        reply = httpx.post(f"{url}/v2/models/langid_tiny/classify", data={"text": ""}, timeout=30)  # spaces are chars
        assert reply.status_code == 400 and "has no tokens" in reply.json()["error"]
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200  # still serving
        _check_grpc_text(app.state.serve.grpc_port, text_package)


def _check_grpc_text(port: int, package: Path) -> None:
    """The gRPC path: same codec (text → label), same 400s as INVALID_ARGUMENT."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(f"127.0.0.1:{port}")

    def infer(texts: list[str]) -> Any:
        tensor = tc.InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
        return client.infer("langid_tiny", [tensor])

    try:
        labels = infer(PHRASES[:2]).as_numpy("label")
        assert [b.decode() for b in labels] == [p.top[0][0] for p in predict_files(
            load_package(package), [], 1, texts=PHRASES[:2])]
        for texts, message in (([""], "has no tokens"), (["x" * 41], "has 41 tokens"),
                               (["a", "b", "c", "d"], "4 rows is over")):
            with pytest.raises(InferenceServerException) as err:
                infer(texts)
            assert str(err.value.status()) == "StatusCode.INVALID_ARGUMENT" and message in str(err.value.message())
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_playground_classifies_typed_text_in_chromium(text_package: Path) -> None:
    """The page in a real browser for a text model: the text box shows, typed text gets the engine's label."""
    from playwright.sync_api import expect

    package = load_package(text_package)
    # One text at a time, as the page sends it (no padding from a longer neighbour in the batch).
    expected = [predict_files(package, [], 1, texts=[phrase])[0].top[0][0] for phrase in PHRASES]
    with running(Settings(path=text_package)) as (url, _), browser_page() as page:
        page.goto(f"{url}/playground/langid_tiny")
        expect(page.locator("#card")).to_contain_text("langid_tiny")
        expect(page.locator("#text-input")).to_be_visible()
        expect(page.locator("#image-input")).to_be_hidden()
        for phrase, label in zip(PHRASES, expected, strict=True):
            page.evaluate("() => document.getElementById('topk').replaceChildren()")
            page.fill("#text", phrase)
            page.click("#classify-text")
            expect(page.locator("#topk li")).to_have_count(4)  # every label of the 4-language model
            expect(page.locator("#topk li").first.locator(".label")).to_have_text(label)
        page.fill("#text", "")
        page.click("#classify-text")
        expect(page.locator("#status")).to_contain_text("has no tokens")  # the server's 400, shown as is
        page.screenshot(path=str(artifacts_dir() / "playground-text.png"), full_page=True)
