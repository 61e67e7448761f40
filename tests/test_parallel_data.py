"""Parallel data: the num2words demo (seeded, unseen test numbers), TSV / JSONL loading, clear errors."""

from pathlib import Path

import pytest

from dlforge.data.datasets import DataError
from dlforge.data.parallel import load_parallel, number_phrase


def test_num2words_pairs_are_seeded_and_test_numbers_never_seen_in_training() -> None:
    params = {"source": "digits", "target": "en", "max_number": 999, "n_samples": 300}
    a = load_parallel("num2words", params, 0.1, 0.2, seed=3)
    b = load_parallel("num2words", params, 0.1, 0.2, seed=3)
    c = load_parallel("num2words", params, 0.1, 0.2, seed=4)
    assert list(a.train) == list(b.train) and list(a.test) == list(b.test) and list(a.train) != list(c.train)
    assert (len(a.train), len(a.val), len(a.test)) == (210, 30, 60)
    train_numbers = {int(s) for s in a.sources("train")}
    test_numbers = {int(s) for s in a.sources("test")}
    assert not train_numbers & test_numbers and len(test_numbers) == 60
    assert dict(a.test)[str(min(test_numbers))] == number_phrase(min(test_numbers), "en")


def test_num2words_english_to_french_phrases() -> None:
    assert number_phrase(421, "en") == "four hundred and twenty-one"
    assert number_phrase(421, "fr") == "quatre cent vingt et un"
    splits = load_parallel("num2words", {"n_samples": 50, "max_number": 99}, 0.2, 0.2, seed=0)
    assert ("seventy-one", "soixante et onze") in [*splits.train, *splits.val, *splits.test]


def test_num2words_rejects_unknown_language_and_too_many_samples() -> None:
    with pytest.raises(DataError, match=r"data.params.target: unknown num2words language 'frr'.*did you mean"):
        load_parallel("num2words", {"target": "frr"}, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="exceeds the 100 distinct numbers"):
        load_parallel("num2words", {"max_number": 99, "n_samples": 500}, 0.1, 0.1, 0)


def test_tsv_and_jsonl_files(tmp_path: Path) -> None:
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("Go.\tVa !\tCC-BY 2.0\n\nHi.\tSalut !\tCC-BY\nRun!\tCours !\tx\n  \t empty\n", encoding="utf-8")
    splits = load_parallel("parallel_tsv", {"path": tsv}, 0.34, 0.34, 0)
    pairs = sorted([*splits.train, *splits.val, *splits.test])
    assert pairs == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours !")]
    swapped = load_parallel("parallel_tsv", {"path": tsv, "swap": True}, 0.34, 0.34, 0)
    assert ("Va !", "Go.") in [*swapped.train, *swapped.val, *swapped.test]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"en": "one", "fr": "un"}\n{"en": "two", "fr": "deux"}\n{"en": "three", "fr": "trois"}\n')
    splits = load_parallel("parallel_jsonl", {"path": jsonl, "source_field": "en", "target_field": "fr"}, .34, .34, 0)
    assert sorted([*splits.train, *splits.val, *splits.test]) == [("one", "un"), ("three", "trois"), ("two", "deux")]


def test_bad_files_name_the_line_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("Go.\tVa !\nno tab here\n")
    with pytest.raises(DataError, match=r"bad.tsv line 2 has 1 field\(s\) split at '\\t', need 2"):
        load_parallel("parallel_tsv", {"path": bad}, 0.1, 0.1, 0)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"source": "a", "tgt": "b"}\n')
    with pytest.raises(DataError, match=r"wrong.jsonl:1: no field 'target' \(set data.params.source_field"):
        load_parallel("parallel_jsonl", {"path": wrong}, 0.1, 0.1, 0)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("caf\xe9\tcoffee\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.tsv line 1 is not utf-8 \(byte 0xe9 at column 4\); set data"):
        load_parallel("parallel_tsv", {"path": latin}, 0.1, 0.1, 0)
    with pytest.raises(DataError, match="is not a file"):
        load_parallel("parallel_tsv", {"path": tmp_path / "missing.tsv"}, 0.1, 0.1, 0)
