"""Text tables through pyarrow: encodings (Latin-1, a UTF-8 BOM), sniffed delimiters, TSV and Parquet, one
error line for undecodable bytes, and lazy tokenization that gives the ids eager tokenization gave."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dlforge.config import DataConfig
from dlforge.data import text as text_data
from dlforge.data.datasets import DATASETS, DataError
from dlforge.data.loaders import eval_loader, train_loader
from dlforge.data.parallel import load_parallel
from dlforge.data.samples import take
from dlforge.data.splits import load_data, split_indices
from dlforge.text import PAD_ID, TokenizerConfig, encode, tokenizer_from_bytes

TOKENIZER = {"kind": "char", "max_length": 24}
ROWS = [(f"{w} {w}", lang) for lang, words in {"fr": ["café", "thé", "élève", "noël"],
                                               "de": ["straße", "müde", "größe", "käse"]}.items()
        for w in words * 4]


def _csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> Path:
    lines = [f"text{delimiter}label", *(f"{t}{delimiter}{lb}" for t, lb in ROWS)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _load(params: dict[str, Any], dataset: str = "text_csv") -> Any:
    cfg = DataConfig.model_validate({"dataset": dataset, "params": {"tokenizer": TOKENIZER, **params}})
    return load_data(cfg, 0)


def _raw(params: dict[str, Any], dataset: str = "text_csv") -> Any:
    entry = DATASETS.get(dataset)
    return entry.load(entry.params.model_validate({"tokenizer": TOKENIZER, **params}), 0)


def _pairs(raw: Any) -> list[tuple[str, str]]:
    return [(t, raw.labels[int(y)]) for t, y in zip(raw.texts, raw.y, strict=True)]


# --- encodings ---------------------------------------------------------------------------------------
def test_a_latin1_csv_loads_with_its_encoding_and_fails_in_one_line_without(tmp_path: Path) -> None:
    path = _csv(tmp_path / "reviews.csv", encoding="latin-1")
    assert _pairs(_raw({"path": str(path), "encoding": "latin-1"})) == ROWS
    vocab = tokenizer_from_bytes(_load({"path": str(path), "encoding": "latin-1"}).artifacts["tokenizer.json"])
    assert "é" in vocab.get_vocab()
    # line 2 is the first text: "café café" — é is byte 0xe9 at column 4
    expected = f"data.params.path: {path} line 2 is not utf-8 (byte 0xe9 at column 4); set data.params.encoding"
    with pytest.raises(DataError) as info:
        _raw({"path": str(path)})
    assert str(info.value).startswith(expected)


def test_the_cli_shows_undecodable_bytes_as_one_error_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "reviews.csv", encoding="latin-1")
    config = tmp_path / "text.yaml"
    config.write_text(f"data: {{dataset: text_csv, params: {{path: '{path}'}}}}\nmodel: {{arch: text_rnn_tiny}}\n")
    proc = subprocess.run([sys.executable, "-m", "dlforge", "train", str(config), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"error: data.params.path: {path} line 2 is not utf-8 (byte 0xe9 at column 4); "
                     "set data.params.encoding (e.g. latin-1)"]


def test_an_excel_csv_with_a_bom_loads_with_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv(tmp_path / "plain.csv").read_bytes())
    assert _pairs(_raw({"path": str(path)})) == ROWS
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "".join(f'{{"text": "{t}", "label": "{lb}"}}\n' for t, lb in ROWS).encode())
    assert _pairs(_raw({"path": str(jsonl)}, "jsonl")) == ROWS


def test_an_unknown_encoding_is_refused_with_its_key() -> None:
    with pytest.raises(ValueError, match="unknown encoding 'latin-9000'"):
        DATASETS.get("text_csv").params.model_validate({"path": "x.csv", "encoding": "latin-9000"})


# --- delimiters and formats ------------------------------------------------------------------------
@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    assert _pairs(_raw({"path": str(_csv(tmp_path / "data.csv", delimiter))})) == ROWS


def test_a_comma_csv_whose_texts_hold_semicolons_is_read_by_its_header(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f'"{t}; {t}, ok",{lb}\n' for t, lb in ROWS))
    assert _pairs(_raw({"path": str(path)})) == [(f"{t}; {t}, ok", lb) for t, lb in ROWS]
    given = _raw({"path": str(_csv(tmp_path / "semi.csv", ";")), "delimiter": ";"})
    assert _pairs(given) == ROWS


def test_quoted_fields_keep_newlines_and_a_missing_column_names_the_sniffed_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text('text,label\n"two\nlines",a\n"b, c",b\nplain,a\nmore,b\n')
    assert list(_raw({"path": str(path)}).texts) == ["two\nlines", "b, c", "plain", "more"]
    with pytest.raises(DataError, match=r"no column 'sentence' .*\(columns: text, label\); read with the sniffed "
                                        r"delimiter ','"):
        _raw({"path": str(path), "text_column": "sentence"})


def test_tsv_parquet_and_jsonl_give_the_same_data_as_csv(tmp_path: Path) -> None:
    expected = _pairs(_raw({"path": str(_csv(tmp_path / "data.csv"))}))
    tsv = _csv(tmp_path / "data.tsv", "\t")
    parquet = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": list(range(len(ROWS))), "text": [t for t, _ in ROWS],
                             "label": [lb for _, lb in ROWS]}), parquet)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(f'{{"t": "{t}", "y": "{lb}", "n": 1}}\n' for t, lb in ROWS))
    assert _pairs(_raw({"path": str(tsv)})) == expected
    assert _pairs(_raw({"path": str(parquet)})) == expected
    assert _pairs(_raw({"path": str(parquet)}, "jsonl")) == expected
    assert _pairs(_raw({"path": str(jsonl), "text_field": "t", "label_field": "y"}, "jsonl")) == expected
    bundle = _load({"path": str(parquet)})
    assert bundle.labels == ["de", "fr"] and take(bundle.train)[0].shape[1] == TOKENIZER["max_length"]


def test_json_values_of_any_type_become_their_python_text(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": "x"}\n{"text": 2.5, "label": true}\n')
    raw = _raw({"path": str(path)}, "jsonl")
    assert _pairs(raw) == [("a", "1"), ("b", "x"), ("2.5", "True")]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "café", "label": "fr"}\n{"text": "tea", "label": "en"}\n'.encode("latin-1"))
    assert _pairs(_raw({"path": str(latin), "encoding": "latin-1"}, "jsonl")) == [("café", "fr"), ("tea", "en")]
    with pytest.raises(DataError, match=r"latin.jsonl line 1 is not utf-8 \(byte 0xe9 at column 14\)"):
        _raw({"path": str(latin)}, "jsonl")


def test_parallel_files_take_encodings_names_and_parquet(tmp_path: Path) -> None:
    latin = tmp_path / "pairs.tsv"
    latin.write_bytes('"Go."\tVa !\ncafé\tcoffee\nHi.\tSalut\n'.encode("latin-1"))
    splits = load_parallel("parallel_tsv", {"path": latin, "encoding": "latin-1"}, 0.34, 0.34, 0)
    assert sorted([*splits.train, *splits.val, *splits.test]) == [('"Go."', "Va !"), ("Hi.", "Salut"),
                                                                   ("café", "coffee")]  # no quoting in TSV
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"en": ["one", "two", "three"], "fr": ["un", "deux", "trois"]}), parquet)
    splits = load_parallel("parallel_tsv", {"path": parquet, "source_column": "fr", "target_column": "en"}, .34, .34, 0)
    assert sorted([*splits.train, *splits.val, *splits.test]) == [("deux", "two"), ("trois", "three"), ("un", "one")]
    named = tmp_path / "named.csv"
    named.write_text("en,fr\none,un\ntwo,deux\nthree,trois\n")
    splits = load_parallel("parallel_tsv", {"path": named, "delimiter": ",", "source_column": "en",
                                            "target_column": "fr"}, .34, .34, 0)
    assert sorted([*splits.train, *splits.val, *splits.test]) == [("one", "un"), ("three", "trois"), ("two", "deux")]


# --- lazy tokenization -------------------------------------------------------------------------------
def _eager_ids(tokenizer_json: bytes, texts: list[str], max_length: int) -> torch.Tensor:
    """The ids as they were made before tokenization became lazy: all texts at once, padded to max_length."""
    ids, _ = encode(tokenizer_from_bytes(tokenizer_json), texts, max_length, truncate=True)
    return torch.from_numpy(np.pad(ids, [(0, 0), (0, max_length - ids.shape[1])], constant_values=PAD_ID))


def test_lazy_text_datasets_give_the_ids_eager_tokenization_gave(tmp_path: Path) -> None:
    data = {"dataset": "langid", "params": {"languages": ["de", "fr", "it"], "per_language": 40, "vocabulary": 100,
                                            "tokenizer": {"kind": "bpe", "vocab_size": 200, "max_length": 6}}}
    cfg = DataConfig.model_validate(data)
    bundle = load_data(cfg, 0)
    raw = _raw(data["params"], "langid")
    splits = dict(zip(("train", "val", "test"), split_indices(raw.y, cfg.val_fraction, cfg.test_fraction, 0),
                      strict=True))
    for name, idx in splits.items():
        x, y = take(getattr(bundle, name))
        texts = [raw.texts[i] for i in idx.tolist()]
        assert torch.equal(x, _eager_ids(bundle.artifacts["tokenizer.json"], texts, 6)) and x.dtype == torch.int64
        assert torch.equal(y, raw.y[idx])
    assert (x[:, -1] != PAD_ID).any()  # some texts are cut at max_length
    in_workers = torch.cat([x for x, _ in eval_loader(bundle.val, 16, workers=2)])
    assert torch.equal(in_workers, take(bundle.val)[0])
    batches = train_loader(bundle.train, 16, 0, 1, 0)  # one tokenizer call a batch: the ids of one at a time
    batches.sampler.set_epoch(1)
    keys = list(batches.sampler)[:16]
    assert torch.equal(next(iter(batches))[0], torch.stack([bundle.train[i][0] for _, i in keys]))


def test_the_tokenizer_streams_the_train_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = text_data.train_tokenizer

    def spy(texts: Iterable[str], cfg: TokenizerConfig) -> Any:
        assert not isinstance(texts, list | tuple)  # a stream, not a list of every text
        return real((seen.append(t) or t for t in texts), cfg)  # type: ignore[func-returns-value]

    monkeypatch.setattr(text_data, "train_tokenizer", spy)
    path = _csv(tmp_path / "data.csv")
    cfg = DataConfig.model_validate({"dataset": "text_csv", "params": {"path": str(path), "tokenizer": TOKENIZER}})
    bundle = load_data(cfg, 0)
    raw = _raw({"path": str(path)})
    train_idx = split_indices(raw.y, cfg.val_fraction, cfg.test_fraction, 0)[0]
    assert seen == [raw.texts[i] for i in train_idx.tolist()] and len(seen) == len(bundle.train)


def test_lazy_sentence_pairs_give_the_batches_eager_tokenization_gave() -> None:
    """Samples are now padded to max_length (+2 for targets) instead of the split's longest sentence; a batch
    cut to its longest sentence (task.trim, as training, evaluation and export do) is what it was."""
    from dlforge.config import parse_config
    from dlforge.experiment import check_experiment
    from dlforge.tasks.seq2seq.data import encode_targets, load_seq2seq_data
    from dlforge.tasks.seq2seq.task import trim

    cfg = check_experiment(parse_config({"task": "seq2seq", "model": {"arch": "rnn_attention_tiny"}, "data": {
        "dataset": "num2words", "params": {"source": "en", "target": "fr", "max_number": 999, "n_samples": 90,
                                           "source_tokenizer": {"kind": "word", "max_length": 4},
                                           "target_tokenizer": {"kind": "bpe", "vocab_size": 80, "max_length": 5}}}}))
    bundle = load_seq2seq_data(cfg)
    splits = load_parallel("num2words", cfg.data.params, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    source, target = (tokenizer_from_bytes(bundle.artifacts[f]) for f in ("source_tokenizer.json",
                                                                            "target_tokenizer.json"))
    for name in ("train", "val", "test"):
        pairs = getattr(splits, name)
        src = torch.from_numpy(encode(source, list(pairs.sources), 4, truncate=True)[0])
        tgt = torch.from_numpy(encode_targets(target, list(pairs.targets), 5))
        lazy_src, lazy_tgt = take(getattr(bundle, name))
        assert lazy_src.shape[1] == 4 and lazy_tgt.shape[1] == 7
        for rows in torch.arange(len(pairs)).split(16):
            for old, new in zip(trim((src[rows], tgt[rows])), trim((lazy_src[rows], lazy_tgt[rows])), strict=True):
                assert torch.equal(old, new)
