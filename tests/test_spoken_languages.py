"""Spoken digits in several languages with disjoint voices, synthesis isolated per voice (a crash or hang
costs one voice), and data.train_groups: a few speakers for training, the rest of the split untouched."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError, DataConfig, parse_config
from dlforge.data.datasets import DataError
from dlforge.data.splits import load_data
from dlforge.data.spoken_digits import GROUP_BY, generate, voice_variants
from dlforge.synth.isolated import Failed, run_isolated
from tests.audio_helpers import tone_folder
from tests.isolated_jobs import job


def _digest(root: Path) -> str:
    files = sorted(root.rglob("*.wav"))
    return hashlib.sha256(b"".join(f.relative_to(root).as_posix().encode() + f.read_bytes() for f in files)).hexdigest()


def _voices(root: Path) -> set[str]:
    with (root / "voices.csv").open(newline="") as handle:
        return {row["voice"] for row in csv.DictReader(handle)}


def test_german_words_in_their_own_folders_same_bytes_with_any_workers(tmp_path: Path) -> None:
    one = generate(tmp_path / "a", voices=3, takes=1, seed=5, language="de", workers=1)
    two = generate(tmp_path / "b", voices=3, takes=1, seed=5, language="de", workers=2)
    assert one == two and one.clips == 30 and not one.skipped
    folders = sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir())
    assert folders == ["de0_null", "de1_eins", "de2_zwei", "de3_drei", "de4_vier", "de5_funf", "de6_sechs",
                       "de7_sieben", "de8_acht", "de9_neun"]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # a fresh process per voice: no carried state
    wave, rate = sf.read(next((tmp_path / "a" / "de5_funf").glob("*.wav")))
    assert rate == 16000 and wave.std() > 0.01
    english = generate(tmp_path / "en", voices=3, takes=1, seed=5)  # same seed, same voices, other words
    assert english.voices == one.voices and _digest(tmp_path / "en") != _digest(tmp_path / "a")


def test_exclude_voices_gives_a_disjoint_set_from_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["data", "spoken-digits", "--out", str(tmp_path / "en"), "--voices", "3",
                                "--takes", "1", "--seed", "2"])
    assert first.exit_code == 0, first.output
    en = _voices(tmp_path / "en")
    # another set that used all but 3 of the other variants, as its voices.csv lists them
    others = [v for v in voice_variants() if v not in en]
    (tmp_path / "other.csv").write_text("file,voice\n" + "".join(f"x/{v}__0.wav,{v}\n" for v in others[3:]))
    exclude = ["--exclude-voices", str(tmp_path / "en" / "voices.csv"), "--exclude-voices", str(tmp_path / "other.csv")]
    second = runner.invoke(app, ["data", "spoken-digits", "--out", str(tmp_path / "fr"), "--language", "fr",
                                 "--voices", "3", "--takes", "1", "--seed", "2", *exclude])
    assert second.exit_code == 0, second.output
    assert "wrote 30 clips (3 voices × 1 takes × 10 digits, fr)" in second.output
    assert _voices(tmp_path / "fr") == set(others[:3])  # the only ones left: none of the English set's
    too_many = runner.invoke(app, ["data", "spoken-digits", "--out", str(tmp_path / "de"), "--language", "de",
                                   "--voices", "4", *exclude])
    assert too_many.exit_code == 2 and "--voices must be between 3 and 3" in too_many.output
    unknown = runner.invoke(app, ["data", "spoken-digits", "--out", str(tmp_path / "xx"), "--language", "xx"])
    assert unknown.exit_code == 2 and "--language 'xx' is not known; choose one of en, de" in unknown.output


def test_a_crashed_or_hung_job_costs_only_its_own_result() -> None:
    kinds = ["ok", "segfault", "hang", "error", "fine"]
    results = run_isolated(job, [(k,) for k in kinds], workers=2, timeout_s=8)
    assert results[0] == "OK" and results[4] == "FINE"
    assert results[1] == Failed("its process died (signal 11)")
    assert results[2] == Failed("hung: killed after its time limit")
    assert results[3] == Failed("ValueError: no such voice")


def _tones(tmp_path: Path, **data: object) -> DataConfig:
    root = tone_folder(tmp_path / "tones", per_class=2, speakers=8)
    return DataConfig(dataset="audio_folder", params={"path": str(root), "duration": 0.5, "group_by": r"^(spk\d+)_"},
                      val_fraction=0.25, test_fraction=0.25, **data)


def test_train_groups_keeps_a_few_speakers_and_records_every_split(tmp_path: Path) -> None:
    full = load_data(_tones(tmp_path), seed=3)
    assert full.split_groups is not None and len(full.split_groups["train"]) == 4
    few = load_data(_tones(tmp_path, train_groups=2), seed=3)
    assert few.split_groups is not None
    kept = few.split_groups["train"]
    assert len(kept) == 2 and set(kept) < set(full.split_groups["train"])
    assert few.split_groups["val"] == full.split_groups["val"] and few.split_groups["test"] == full.split_groups["test"]
    assert len(few.train) == 2 * 2 * 2  # 2 speakers × 2 classes × 2 clips
    split = few.facts["split"]
    assert split["group_names"] == few.split_groups and split["groups"]["train"] == 2
    assert split["train_groups_of"] == 4
    assert load_data(_tones(tmp_path, train_groups=2), seed=3).split_groups == few.split_groups  # seeded
    named = load_data(_tones(tmp_path, train_groups=[kept[0]]), seed=3)
    assert named.split_groups is not None and named.split_groups["train"] == [kept[0]]
    json.dumps(split)  # run.json stores the facts as they are


def test_train_groups_errors_name_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train_groups.*must be 1 or more groups, got 0"):
        parse_config({"data": {"train_groups": 0}})
    with pytest.raises(ConfigError, match="train_groups.*each once"):
        parse_config({"data": {"train_groups": ["m1", "m1"]}})
    full = load_data(_tones(tmp_path), seed=3)
    assert full.split_groups is not None
    with pytest.raises(DataError, match="5 groups asked for, but the train split holds 4; lower it"):
        load_data(_tones(tmp_path, train_groups=5), seed=3)
    in_test = full.split_groups["test"][0]
    with pytest.raises(DataError, match=rf"'{in_test}' \(in the test split\), 'nobody' \(no such group\)"):
        load_data(_tones(tmp_path, train_groups=[in_test, "nobody"]), seed=3)
    no_groups = DataConfig(dataset="audio_folder", params={"path": str(tmp_path / "tones"), "duration": 0.5},
                           val_fraction=0.25, test_fraction=0.25, train_groups=2)
    with pytest.raises(DataError, match=rf"no groups; name each .*data.params.group_by .*{re.escape(GROUP_BY)}"):
        load_data(no_groups, seed=3)
