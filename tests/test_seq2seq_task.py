"""task: seq2seq end to end on a tiny digits → English model: train, report, export with string parity,
`dlforge translate` (ONNX Runtime and torch agree), and a real server taking and returning BYTES."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError, parse_config
from dlforge.experiment import check_experiment
from dlforge.export.package import load_package
from dlforge.serve.settings import Settings
from dlforge.tasks.seq2seq.codec import translate_lines
from tests.serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, running

SENTENCES = ["12", "345", "7", "908"]


def seq2seq_config(**train: object) -> dict:
    return {"name": "tiny_s2s", "task": "seq2seq",
            "data": {"dataset": "num2words", "params": {
                "source": "digits", "target": "en", "max_number": 999, "n_samples": 240,
                "source_tokenizer": {"kind": "char", "max_length": 8},
                "target_tokenizer": {"kind": "bpe", "vocab_size": 60}}},
            "model": {"arch": "rnn_attention_tiny"},
            # lr and epochs so the tiny model emits real (wrong) words of varying length: parity over empty
            # strings would prove nothing
            "train": {"epochs": 4, "batch_size": 32, "progress": False, "optimizer": {"lr": 0.03}, **train},
            "eval": {"plots": True, "decode": {"beam_size": 2, "max_length": 10}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dlforge run` in its own process, as a user runs it (command line, exit status, the files it leaves)."""
    root = tmp_path_factory.mktemp("s2s")
    (root / "s2s.yaml").write_text(yaml.safe_dump(seq2seq_config()))
    proc = subprocess.run([sys.executable, "-m", "dlforge", "run", str(root / "s2s.yaml"), "--out",
                           str(root / "run")], capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_config_mistakes_are_reported_with_their_keys() -> None:
    bad = seq2seq_config(monitor="val_accuracy")
    bad["data"]["params"]["target_tokenizer"]["kind"] = "wordpeice"
    bad["model"] = {"arch": "gru_atention"}
    with pytest.raises(ConfigError) as exc:
        check_experiment(parse_config(bad))
    text = str(exc.value)
    assert "data.params.target_tokenizer.kind" in text
    assert "model.arch: unknown seq2seq architecture 'gru_atention' — did you mean 'gru_attention'" in text
    assert "train.monitor: 'val_accuracy' is not a seq2seq metric" in text
    wrong_data = seq2seq_config()
    wrong_data["data"] = {"dataset": "digits"}
    with pytest.raises(ConfigError, match="data.dataset: unknown parallel dataset 'digits'"):
        check_experiment(parse_config(wrong_data))


@pytest.mark.slow
@pytest.mark.timeout(900)  # the module's first test also trains and exports the model
def test_run_directory_holds_scores_samples_and_tokenizers(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("bleu", "chrf", "exact_match", "token_accuracy", "beam_bleu", "beam_exact_match", "loss"):
        assert isinstance(metrics[key], float), key
    assert metrics["sentences"] == 36 and len(metrics["samples"]) == 20
    assert {"source", "reference", "greedy", "beam"} <= set(metrics["samples"][0])
    assert (trained / "report/samples.md").read_text().startswith("| source | reference | greedy | beam |")
    assert (trained / "report/learning_curves.png").is_file()
    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and "val_bleu" in history[0]
    assert {"source_tokenizer.json", "target_tokenizer.json"} <= {p.name for p in trained.iterdir()}


@pytest.mark.slow
@pytest.mark.timeout(900)  # the module's first test also trains and exports the model
def test_package_decodes_identically_in_onnx_runtime_torch_and_the_cli(trained: Path) -> None:
    package = load_package(trained / "package")
    m = package.manifest
    assert m.task == "seq2seq" and m.graphs == ["encoder.onnx", "decoder_step.onnx"]
    assert m.task_info["parity"] == {"identical_greedy": 36, "identical_beam": 36}
    assert {"source_tokenizer.json", "target_tokenizer.json", "encoder.onnx", "decoder_step.onnx"} <= set(m.files)
    onnx = translate_lines(package, SENTENCES)
    assert any(onnx), "the tiny model should emit words, or parity is checked on empty strings"
    assert onnx == translate_lines(package, SENTENCES, runtime="torch") and len(onnx) == 4
    assert translate_lines(package, SENTENCES, beam=1) == translate_lines(package, SENTENCES, "torch", beam=1)
    result = CliRunner().invoke(app, ["translate", str(trained / "package"), *SENTENCES])
    assert result.exit_code == 0 and result.stdout.splitlines() == onnx
    bad = CliRunner().invoke(app, ["translate", str(trained / "package"), "1234567890123"])
    assert bad.exit_code == 2 and "at most 8" in bad.stderr


def _binary_bytes_request(items: list[bytes]) -> tuple[bytes, dict[str, str]]:
    blob = b"".join(struct.pack("<I", len(b)) + b for b in items)
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(items)],
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


@pytest.mark.slow
@pytest.mark.timeout(900)  # the module's first test also trains and exports the model
@pytest.mark.serve
def test_server_translates_bytes_and_refuses_bad_text(trained: Path) -> None:
    expected = translate_lines(load_package(trained / "package"), SENTENCES)
    with running(Settings(path=trained / "package", grpc_port=0)) as (base, server):
        meta = httpx.get(f"{base}/v2/models/tiny_s2s").json()
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "translation", "datatype": "BYTES", "shape": [-1]}]
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [4], "data": SENTENCES}]}
        reply = httpx.post(f"{base}/v2/models/tiny_s2s/infer", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == expected
        # one sentence per request, concurrently: the batcher pads sentences of different lengths together
        with httpx.Client() as client:
            singles = [client.post(f"{base}/v2/models/tiny_s2s/infer", json={"inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": [s]}]}) for s in SENTENCES]
        assert [r.json()["outputs"][0]["data"][0] for r in singles] == expected
        content, headers = _binary_bytes_request([b"12", b"\xff\xfe"])
        invalid = httpx.post(f"{base}/v2/models/tiny_s2s/infer", content=content, headers=headers)
        assert invalid.status_code == 400 and "element 1 is not valid UTF-8" in invalid.json()["error"]
        long = httpx.post(f"{base}/v2/models/tiny_s2s/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["1" * 40]}]})
        assert long.status_code == 400 and "at most 8" in long.json()["error"]
        assert np.all([r.status_code == 200 for r in singles])
        _check_grpc(f"127.0.0.1:{server.state.serve.grpc_port}", expected)
    many = SENTENCES * 5  # more sentences than a batch: decoded in slices of different lengths, joined padded (#29)
    with running(Settings(path=trained / "package", grpc_port=0, max_batch_size=3)) as (base, server):
        reply = httpx.post(f"{base}/v2/models/tiny_s2s/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [len(many)], "data": many}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == expected * 5
        _check_grpc(f"127.0.0.1:{server.state.serve.grpc_port}", expected)
        ranked = httpx.post(f"{base}/v2/models/tiny_s2s/classify", data={"text": "12"})
        assert ranked.status_code == 400 and "a seq2seq model has no labels to rank" in ranked.json()["error"]


def _check_grpc(target: str, expected: list[str]) -> None:
    """The gRPC service goes through the same codec: BYTES in, BYTES out, bad UTF-8 is INVALID_ARGUMENT."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    def text(items: list[bytes]) -> tc.InferInput:
        tensor = tc.InferInput("text", [len(items)], "BYTES")
        tensor.set_data_from_numpy(np.array(items, dtype=object))
        return tensor

    client = tc.InferenceServerClient(target)
    try:
        result = client.infer("tiny_s2s", [text([s.encode() for s in SENTENCES])])
        assert [b.decode() for b in result.as_numpy("translation").tolist()] == expected
        with pytest.raises(InferenceServerException) as err:
            client.infer("tiny_s2s", [text([b"12", b"\xff\xfe"])])
        assert "INVALID_ARGUMENT" in str(err.value.status()) and "not valid UTF-8" in str(err.value.message())
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(900)  # the module's first test also trains and exports the model
@pytest.mark.serve
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_playground_translates_typed_lines_in_chromium(trained: Path) -> None:
    from playwright.sync_api import expect

    expected = translate_lines(load_package(trained / "package"), SENTENCES[:2])
    assert any(expected)
    with running(Settings(path=trained / "package")) as (base, _), browser_page() as page:
        page.goto(f"{base}/playground/tiny_s2s")
        expect(page.locator("#classify-text")).to_have_text("Translate")
        page.fill("#text", "\n".join(SENTENCES[:2]))
        page.click("#classify-text")
        expect(page.locator("#topk li .translation")).to_have_text(expected)
        expect(page.locator("#topk li .source")).to_have_text(SENTENCES[:2])
        assert page.locator("#status").inner_text() == ""


@pytest.mark.slow
def test_a_layer_list_encoder_trains_exports_with_parity_and_translates(tmp_path: Path) -> None:
    """#12: `model.params.encoder` — the layers of `dlforge layers` as the encoder of an attention RNN."""
    raw = seq2seq_config(epochs=2)
    raw["data"]["params"]["n_samples"] = 160
    raw["model"] = {"arch": "rnn_attention_tiny", "params": {"encoder": [
        {"embedding": 8}, "positional", {"gru": {"hidden": 8, "bidirectional": True, "return_sequences": True}}]}}
    (tmp_path / "s2s.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "dlforge", "run", str(tmp_path / "s2s.yaml"), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]  # the exporter's noise stays out of the user's way
    package = load_package(tmp_path / "run" / "package")
    assert package.manifest.task_info["parity"] == {"identical_greedy": 24, "identical_beam": 24}
    assert translate_lines(package, SENTENCES) == translate_lines(package, SENTENCES, runtime="torch")
