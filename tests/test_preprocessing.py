"""Preprocessing as typed models (dlforge.preprocessing): every kind round-trips through JSON, a bad section
names its key and kind, a plugin's own kind is carried as written and typed by its model, and packages written
before the models existed (tests/fixtures/packages_v0, one per built-in kind) still load, predict and serve
exactly as ONNX Runtime answers on their own graphs."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from PIL import Image
from pydantic import ConfigDict, Field
from starlette.testclient import TestClient
from tokenizers import Tokenizer
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.decoding import SearchSettings, Special, search
from dlforge.decoding.onnx_engine import OnnxEngine
from dlforge.export.package import MANIFEST, PackageError, load_package
from dlforge.preprocessing import (
    BUILT_IN,
    GeneratorPreprocessing,
    ImagePreprocessing,
    PluginPreprocessing,
    PreprocessingError,
    TextPreprocessing,
    parse_preprocessing,
)
from dlforge.runinfo import RUN_INFO, RunInfo
from dlforge.serve.app import create_app
from dlforge.serve.settings import Settings

V0 = {p.name: p for p in sorted((Path(__file__).parent / "fixtures" / "packages_v0").iterdir()) if p.is_dir()}
runner = CliRunner()


def written(name: str, file: str = MANIFEST) -> dict[str, Any]:
    """The preprocessing section exactly as the previous version wrote it."""
    section: dict[str, Any] = json.loads((V0[name] / file).read_text())["preprocessing"]
    return section


EXAMPLES = {  # one section per kind, as the data loaders and exporters write them
    "image": written("digits_cnn"), "audio": written("tones"), "text": written("langid_rnn"),
    "translation": written("num2words"), "generator": written("dcgan"),
    "tokens": {"kind": "tokens", "vocab_size": 20}, "tensor": {"kind": "tensor", "shape": [6], "mean": [0.5] * 6,
                                                               "std": [0.25] * 6},
}


# --- the models --------------------------------------------------------------------------------------------
def test_every_kind_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(BUILT_IN)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_kind_round_trips_through_json_with_the_same_keys(kind: str) -> None:
    raw = EXAMPLES[kind]
    prep = parse_preprocessing(json.loads(json.dumps(raw)))
    assert type(prep) is BUILT_IN[kind] and prep.kind == kind
    dumped = prep.model_dump(mode="json")
    assert dumped == raw and list(dumped) == list(raw)
    assert parse_preprocessing(json.loads(prep.model_dump_json())) == prep


def test_optional_keys_left_out_stay_out_and_set_ones_are_written() -> None:
    raw = {k: v for k, v in EXAMPLES["image"].items() if k not in ("note", "mean", "std")}
    assert parse_preprocessing(raw).model_dump(mode="json") == raw
    built = ImagePreprocessing(size=(4, 6), channels=3, channel_order="RGB", scale=1 / 255)
    assert built.model_dump(mode="json") == {"kind": "image", "size": [4, 6], "channels": 3, "channel_order": "RGB",
                                             "scale": 1 / 255}
    assert built.model_copy(update={"mean": [0.5] * 3}).model_dump(mode="json")["mean"] == [0.5] * 3
    text = TextPreprocessing.model_validate({**EXAMPLES["text"], "space_id": None})
    assert text.model_dump(mode="json")["space_id"] is None  # given as null, written as null


def _required(kind: str) -> list[str]:
    return [name for name, field in BUILT_IN[kind].model_fields.items() if field.is_required()]


@pytest.mark.parametrize(("kind", "key"), [(kind, key) for kind in sorted(EXAMPLES) for key in _required(kind)])
def test_a_missing_key_is_named_with_its_kind(kind: str, key: str) -> None:
    raw = {k: v for k, v in EXAMPLES[kind].items() if k != key}
    with pytest.raises(PreprocessingError, match=rf"^run.json: preprocessing\.{key}: missing — kind '{kind}' needs"):
        parse_preprocessing(raw, "run.json: preprocessing")


@pytest.mark.parametrize(("kind", "key"), [(kind, key) for kind in sorted(EXAMPLES) for key in EXAMPLES[kind]
                                           if key != "kind"])
def test_a_wrong_typed_key_is_named_with_its_kind(kind: str, key: str) -> None:
    with pytest.raises(PreprocessingError, match=rf"^preprocessing\.{key}[.:].* \(kind '{kind}': "):
        parse_preprocessing({**EXAMPLES[kind], key: {"a": "b"}})


@pytest.mark.parametrize(("raw", "message"), [
    ({"kind": "tokens", "vocab_size": 9, "size": 3}, "preprocessing.size: not a key of kind 'tokens' (its keys: "
                                                     "kind, vocab_size)"),
    ({"size": [8, 8]}, "preprocessing.kind: missing or not a string — every preprocessing section names its kind "
                       "(image, audio"),
    ({"kind": 7}, "preprocessing.kind: missing or not a string"),
    (None, "preprocessing: None is not an object with a kind"),
    ({**EXAMPLES["image"], "channels": 3}, "preprocessing (kind 'image'): channel_order 'L' does not fit channels 3"),
    ({**EXAMPLES["audio"], "sample_rate": "fast"}, "preprocessing.sample_rate: Input should be a valid integer"),
])
def test_bad_sections_are_refused_saying_what_fits(raw: Any, message: str) -> None:
    with pytest.raises(PreprocessingError) as caught:
        parse_preprocessing(raw)
    assert str(caught.value).startswith(message), caught.value


def test_of_narrows_to_a_kind_or_names_both() -> None:
    prep = parse_preprocessing(EXAMPLES["text"])
    assert TextPreprocessing.of(prep) is prep
    with pytest.raises(PreprocessingError, match="a generator codec needs kind 'generator', not 'text'"):
        GeneratorPreprocessing.of(prep, "a generator codec")


# --- kinds a plugin defines ---------------------------------------------------------------------------------
class Tabular(PluginPreprocessing):
    """What a plugin writes: its own kind, typed by its own subclass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tabular"] = "tabular"
    features: list[str]
    target_std: float = Field(gt=0, description="the target's spread")


def test_a_plugins_kind_is_carried_as_written_and_typed_by_its_own_model(tmp_path: Path) -> None:
    written_by_plugin = Tabular(features=["age", "bmi"], target_std=2.5)
    info = RunInfo([2], ["y"], False, parse_preprocessing(written_by_plugin), "diabetes")
    assert info.preprocessing is written_by_plugin
    info.save(tmp_path)
    raw = json.loads((tmp_path / RUN_INFO).read_text())["preprocessing"]
    assert raw == {"kind": "tabular", "features": ["age", "bmi"], "target_std": 2.5}
    read = RunInfo.read(tmp_path / RUN_INFO).preprocessing
    assert type(read) is PluginPreprocessing and read.model_dump(mode="json") == raw  # dlforge only carries it
    assert Tabular.of(read) == written_by_plugin and Tabular.of(written_by_plugin) is written_by_plugin


def test_a_plugins_model_names_its_bad_keys_and_no_plugin_takes_a_built_in_name() -> None:
    for raw, message in (({"kind": "tabular", "features": ["a"]}, r"^preprocessing.target_std: missing — kind "
                                                                  r"'tabular' needs it \(the target's spread\)"),
                         ({"kind": "tabular", "features": ["a"], "target_std": -1}, r"^preprocessing.target_std: "
                                                                                    r"Input should be greater than 0"),
                         ({"kind": "image"}, r"^preprocessing.size: missing — kind 'image'")):
        with pytest.raises(PreprocessingError, match=message):
            Tabular.of(parse_preprocessing(raw))
    with pytest.raises(PreprocessingError, match="needs kind 'tabular', not 'text'"):
        Tabular.of(parse_preprocessing(EXAMPLES["text"]))
    with pytest.raises(ValueError, match="'image' is a built-in kind"):
        PluginPreprocessing(kind="image")


def test_a_plugin_datasets_own_kind_gets_train_statistics_as_built_in_floats_do() -> None:
    from dlforge.config import DataConfig, parse_config
    from dlforge.data.datasets import RawData
    from dlforge.data.splits import channel_stats, make_bundle
    from dlforge.tasks.classification.task import ClassificationTask

    x, y = torch.rand(60, 4), torch.arange(60) % 2
    raw = RawData(x, y, ["a", "b"], {"kind": "tabular", "features": list("wxyz")})  # a plugin may still give a dict
    bundle = make_bundle(raw, DataConfig(dataset="synthetic"), seed=0)
    prep = bundle.preprocessing
    mean, std = channel_stats(bundle.train.tensors[0])
    assert type(prep) is PluginPreprocessing and prep.model_dump() == {"kind": "tabular", "features": list("wxyz"),
                                                                       "mean": mean, "std": std}
    net = ClassificationTask().create_model(parse_config({"model": {"arch": "mlp_tiny"}}), bundle)
    assert net.normalize.mean.tolist() == pytest.approx(mean)  # the classifier normalises with them
    bare = make_bundle(RawData(x, y, ["a", "b"]), DataConfig(dataset="synthetic"), seed=0)
    assert bare.preprocessing.model_dump() == {"kind": "tensor", "shape": [4], "mean": mean, "std": std}


# --- files of the previous version ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(V0))
def test_a_previous_run_json_reads_and_saves_byte_for_byte(name: str, tmp_path: Path) -> None:
    info = RunInfo.read(V0[name] / RUN_INFO)
    assert info.preprocessing.kind == written(name, RUN_INFO)["kind"]
    info.save(tmp_path)
    assert (tmp_path / RUN_INFO).read_text() == (V0[name] / RUN_INFO).read_text()


@pytest.mark.parametrize("name", sorted(V0))
def test_a_previous_manifest_loads_and_dumps_the_same_json(name: str) -> None:
    manifest = load_package(V0[name]).manifest
    again = json.loads(manifest.model_dump_json())
    old = json.loads((V0[name] / MANIFEST).read_text())
    assert again == old and list(again["preprocessing"]) == list(old["preprocessing"])


def test_bad_preprocessing_fails_loading_with_the_key_and_kind(tmp_path: Path) -> None:
    package = shutil.copytree(V0["digits_cnn"], tmp_path / "package")  # manifest.json itself is not hashed
    manifest = json.loads((package / MANIFEST).read_text())
    for section, message in (({**manifest["preprocessing"], "size": "8x8"}, "preprocessing.size: Input should be"),
                             ({"kind": ["image"]}, "preprocessing.kind: missing or not a string")):
        (package / MANIFEST).write_text(json.dumps({**manifest, "preprocessing": section}))
        with pytest.raises(PackageError, match=rf"manifest.json: {message}"):
            load_package(package)
        result = runner.invoke(app, ["inspect", str(package)])
        assert result.exit_code == 2 and "preprocessing." in result.output, result.output
    run = json.loads((package / RUN_INFO).read_text())
    (package / RUN_INFO).write_text(json.dumps({**run, "preprocessing": {}}))
    with pytest.raises(PreprocessingError, match=r"run.json: preprocessing.kind: missing"):
        RunInfo.read(package / RUN_INFO)


# --- previous packages answer as ONNX Runtime does ---------------------------------------------------------
def _onnx(name: str, feeds: dict[str, np.ndarray], graph: str = "model.onnx") -> list[Any]:
    return ort.InferenceSession(str(V0[name] / graph), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(name)`: an in-process app serving that v0 package, closed after the test."""
    clients: list[TestClient] = []

    def start(name: str) -> TestClient:
        client = TestClient(create_app(Settings(path=V0[name])), base_url="http://127.0.0.1")
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def _infer(client: TestClient, name: str, *inputs: dict[str, Any]) -> dict[str, Any]:
    reply = client.post(f"/v2/models/{name}/infer", json={"inputs": list(inputs)})
    assert reply.status_code == 200, reply.text
    return {o["name"]: o["data"] for o in reply.json()["outputs"]}


def _tensor(name: str, array: np.ndarray, datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.reshape(-1).tolist()}


def _predicted(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["predict", *args, "--json", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def _top(probabilities: np.ndarray, labels: list[str]) -> tuple[str, float]:
    return labels[int(probabilities.argmax())], float(probabilities.max())


def _same(row: dict[str, Any], want: tuple[str, float]) -> None:
    top = row["top"][0] if "top" in row else row["predictions"][0]
    assert top["label"] == want[0] and top["probability"] == pytest.approx(want[1], abs=1e-5)


def test_v0_image_classifier(serve: Any, tmp_path: Path) -> None:
    labels = [str(i) for i in range(10)]
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    want = _onnx("digits_cnn", {"input": x})[1]
    np.save(tmp_path / "x.npy", x)
    pixels = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(pixels, "L").save(tmp_path / "digit.png")
    from_png = _onnx("digits_cnn", {"input": (pixels / 255).astype(np.float32)[None, None]})[1][0]
    rows = _predicted(str(V0["digits_cnn"]), str(tmp_path / "x.npy"), str(tmp_path / "digit.png"))
    for row, probabilities in zip(rows, [*want, from_png], strict=True):
        _same(row, _top(probabilities, labels))
    client = serve("digits_cnn")
    served = _infer(client, "digits_cnn", _tensor("input", x, "FP32"))["probabilities"]
    np.testing.assert_allclose(np.reshape(served, (3, 10)), want, atol=1e-5)
    upload = client.post("/v2/models/digits_cnn/classify", files={"file": (tmp_path / "digit.png").read_bytes()})
    _same(upload.json(), _top(from_png, labels))


def test_v0_text_classifier(serve: Any) -> None:
    labels, texts = ["de", "en", "fr", "it"], ["der hund und die katze", "the cat and the dog", "le chat"]
    tok = Tokenizer.from_file(str(V0["langid_rnn"] / "tokenizer.json"))
    want = [_onnx("langid_rnn", {"input": np.array([tok.encode(t, add_special_tokens=False).ids])})[1][0]
            for t in texts]
    for row, probabilities in zip(_predicted(str(V0["langid_rnn"]), *(f"--text={t}" for t in texts)), want,
                                  strict=True):
        _same(row, _top(probabilities, labels))
    served = _infer(serve("langid_rnn"), "langid_rnn", _tensor("text", np.array(texts, dtype=object), "BYTES"))
    np.testing.assert_allclose(np.reshape(served["probabilities"], (3, 4)), np.stack(want), atol=1e-5)
    assert served["label"] == [_top(p, labels)[0] for p in want]


def test_v0_audio_classifier(serve: Any, tmp_path: Path) -> None:
    rate, labels = 8000, ["high", "low"]
    wave = (0.5 * np.sin(2 * np.pi * 300 * np.arange(4000) / rate)).astype(np.float32)  # 0.5 s: no crop or pad
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="FLOAT")
    (tmp_path / "clip.wav").write_bytes(buffer.getvalue())
    want = _top(_onnx("tones", {"input": wave[None]})[1][0], labels)
    _same(_predicted(str(V0["tones"]), str(tmp_path / "clip.wav"))[0], want)
    _same(serve("tones").post("/v2/models/tones/classify", files={"file": buffer.getvalue()}).json(), want)


def test_v0_translation(serve: Any) -> None:
    manifest, sentences = json.loads((V0["num2words"] / MANIFEST).read_text()), ["7", "42", "99"]
    prep = manifest["preprocessing"]
    source, target = (Tokenizer.from_file(str(V0["num2words"] / prep[k])) for k in ("source_tokenizer",
                                                                                      "target_tokenizer"))
    engine = OnnxEngine(V0["num2words"] / "encoder.onnx", V0["num2words"] / "decoder_step.onnx")
    want = []
    for sentence in sentences:
        src = np.array([source.encode(sentence, add_special_tokens=False).ids], dtype=np.int64)
        ids = search(engine, src, Special(prep["bos_id"], prep["eos_id"]),
                     SearchSettings.model_validate(manifest["task_info"]["decoding"]))[0]
        want.append(target.decode(ids, skip_special_tokens=True))
    served = _infer(serve("num2words"), "num2words", _tensor("text", np.array(sentences, dtype=object), "BYTES"))
    assert served["translation"] == want and all(want)


def test_v0_generator(serve: Any) -> None:
    seeds, classes = np.array([3, 4]), np.array([1, 7])
    latents = np.stack([np.random.default_rng(int(s)).standard_normal(64, dtype=np.float32) for s in seeds])
    want = _onnx("dcgan", {"latent": latents, "class": classes})[0]
    served = _infer(serve("dcgan"), "dcgan", _tensor("seed", seeds, "INT64"), _tensor("class", classes, "INT64"))
    np.testing.assert_allclose(np.reshape(served["image"], want.shape), want, atol=1e-5)


def test_v0_denoiser(serve: Any) -> None:
    noisy = np.random.default_rng(1).random((2, 1, 8, 8), dtype=np.float32)
    want = _onnx("denoise", {"image": noisy})[0]
    served = _infer(serve("denoise"), "denoise", _tensor("image", noisy, "FP32"))
    np.testing.assert_allclose(np.reshape(served["denoised"], want.shape), want, atol=1e-5)
