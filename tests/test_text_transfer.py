"""#27 item 3: `model.pretrained` from a text run keeps the source's tokenizer (token ids keep their meaning),
refuses a config that pins another one, and warns where nothing can be checked (a bare .safetensors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import load_config
from dlforge.experiment import check_experiment
from dlforge.nn.pretrained import PretrainedError
from dlforge.taskapi import get_task
from dlforge.text import TOKENIZER_FILE, encode, tokenizer_from_bytes
from dlforge.train.run import train_run
from tests.conftest import tiny_config

TEXT = "wie geht es, ¿qué tal? hoe gaat het"


def langid(languages: list[str], tokenizer: dict[str, Any] | None, pretrained: str | None = None,
           epochs: int = 1) -> Any:
    params: dict[str, Any] = {"languages": languages, "per_language": 40, "vocabulary": 100}
    if tokenizer is not None:
        params["tokenizer"] = tokenizer
    model: dict[str, Any] = {"arch": "text_rnn_tiny", **({"pretrained": pretrained} if pretrained else {})}
    return check_experiment(tiny_config(data={"dataset": "langid", "params": params}, model=model,
                                        train={"epochs": epochs}))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text classifier on German, English and French phrases with a char tokenizer of 24 tokens a text."""
    run_dir = tmp_path_factory.mktemp("text_source") / "pre"
    train_run(langid(["de", "en", "fr"], {"kind": "char", "max_length": 24}), run_dir)
    return run_dir


def ids(tokenizer_json: bytes) -> list[int]:
    return encode(tokenizer_from_bytes(tokenizer_json), [TEXT], 64, truncate=True)[0][0].tolist()


def test_a_text_fine_tune_keeps_the_source_tokenizer_and_resumes(source: Path, tmp_path: Path) -> None:
    tuned_cfg = langid(["es", "it", "nl"], {"max_length": 32}, str(source))
    train_run(tuned_cfg, tmp_path / "tuned")
    theirs, mine = (source / TOKENIZER_FILE).read_bytes(), (tmp_path / "tuned" / TOKENIZER_FILE).read_bytes()
    assert mine == theirs and ids(mine) == ids(theirs)
    # what the run would have had without the fix: a tokenizer of its own data gives the same text other ids
    fresh = get_task("classification").load_data(langid(["es", "it", "nl"], {"max_length": 32})).artifacts
    assert ids(fresh[TOKENIZER_FILE]) != ids(theirs)

    report = json.loads((tmp_path / "tuned/pretrained.json").read_text())
    assert "body.0.weight" in report["loaded"]  # the embedding: its rows are the same tokens' rows
    assert not (report["missing"] or report["mismatched"]) and "labels differ" in report["head_reason"]
    assert any(note.startswith(f"tokenizer reused from {source}") for note in report["notes"])
    assert "data.params.tokenizer.max_length: 32 here, 24 in the source" in " ".join(report["notes"])
    assert not report["warnings"]
    recorded = load_config(tmp_path / "tuned/config.yaml").data.params["tokenizer"]  # resolved: defaults filled in
    assert recorded == {"kind": "char", "vocab_size": 1000, "lowercase": True, "max_length": 32, "min_frequency": 1}

    # --resume reads the run's own settings and files (the recorded tokenizer), not the source again
    train_run(langid(["es", "it", "nl"], {"max_length": 32}, str(source), epochs=2), tmp_path / "tuned",
              resume=True)
    assert (tmp_path / "tuned" / TOKENIZER_FILE).read_bytes() == theirs
    assert len((tmp_path / "tuned/history.jsonl").read_text().splitlines()) == 2


def test_a_pinned_tokenizer_that_differs_from_the_source_is_one_error_line(source: Path, tmp_path: Path) -> None:
    with pytest.raises(PretrainedError) as err:
        train_run(langid(["es", "it"], {"kind": "word", "lowercase": False}, str(source)), tmp_path / "a")
    assert "data.params.tokenizer.kind is 'word' here but 'char' in the source" in str(err.value)
    assert "data.params.tokenizer.lowercase is False here but True in the source" in str(err.value)
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "langid", "params": {
        "languages": ["es", "it"], "per_language": 40, "tokenizer": {"vocab_size": 50}}},
        "model": {"arch": "text_rnn_tiny", "pretrained": str(source)}, "train": {"progress": False}}))
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.params.tokenizer.vocab_size is 50 here but 1000 in the source" in errors[0]


def test_a_bare_safetensors_source_warns_about_tokenizer_and_labels(source: Path, tmp_path: Path) -> None:
    bare = tmp_path / "weights.safetensors"
    shutil.copy(source / "model.safetensors", bare)
    train_run(langid(["de", "en", "fr"], {"kind": "char", "max_length": 24}, str(bare)), tmp_path / "tuned")
    report = json.loads((tmp_path / "tuned/pretrained.json").read_text())
    assert report["head"] == [] and {"body.5.weight", "body.5.bias"} <= set(report["loaded"])
    warnings = " ".join(report["warnings"])
    assert f"{bare} (a weights file) carries no dlforge tokenizer" in warnings
    assert "head: auto loads the classifier body.5 because its shape fits" in warnings
    assert "names no labels, so whether its classes are this data's (de, en, fr) cannot be checked" in warnings


@pytest.mark.slow
def test_a_package_source_lends_its_verified_tokenizer(source: Path, tmp_path: Path) -> None:
    from dlforge.export.package import export_run

    package = export_run(source, out=tmp_path / "package")
    train_run(langid(["es", "it"], None, str(package)), tmp_path / "tuned")
    assert (tmp_path / "tuned" / TOKENIZER_FILE).read_bytes() == (source / TOKENIZER_FILE).read_bytes()
    (package / TOKENIZER_FILE).write_bytes(b"{}")  # tampered: refused before anything is read from it
    with pytest.raises(PretrainedError, match="model.pretrained.source: .*tokenizer.json"):
        train_run(langid(["es", "it"], None, str(package)), tmp_path / "again")


def seq2seq(target: str, pretrained: str | None = None) -> Any:
    return check_experiment(tiny_config(
        task="seq2seq", model={"arch": "rnn_attention_tiny", **({"pretrained": pretrained} if pretrained else {})},
        data={"dataset": "num2words", "params": {
            "source": "digits", "target": target, "max_number": 999, "n_samples": 120,
            "source_tokenizer": {"kind": "char", "max_length": 8}, "target_tokenizer": {"kind": "bpe",
                                                                                         "vocab_size": 60}}},
        train={"epochs": 1, "batch_size": 32}, eval={"plots": False, "decode": {"beam_size": 1, "max_length": 6}}))


@pytest.mark.slow
def test_a_translation_fine_tune_keeps_both_tokenizers_and_refuses_a_classifier_source(source: Path,
                                                                                      tmp_path: Path) -> None:
    train_run(seq2seq("en"), tmp_path / "en")
    with pytest.raises(PretrainedError, match="keeps tokenizer.json, but this run's task reads source_tokenizer"):
        train_run(seq2seq("fr", str(source)), tmp_path / "wrong")
    train_run(seq2seq("fr", str(tmp_path / "en")), tmp_path / "fr")
    for name in ("source_tokenizer.json", "target_tokenizer.json"):
        assert (tmp_path / "fr" / name).read_bytes() == (tmp_path / "en" / name).read_bytes()
    report = json.loads((tmp_path / "fr/pretrained.json").read_text())
    assert report["loaded"] and not (report["missing"] or report["mismatched"])
