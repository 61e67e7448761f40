"""The speech transfer benchmark's wiring (benchmarks/finetune_speech.py, `bench_finetune.py --task speech`)
at toy size: real eSpeak synthesis of English and German by disjoint voices, a real English pre-training
run, and both arms on two German voices through dlforge's own train_run."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finetune_speech", ROOT / "benchmarks" / "finetune_speech.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune_speech"] = module
    spec.loader.exec_module(module)
    return module


def _voices(folder: Path) -> set[str]:
    with (folder / "voices.csv").open(newline="") as handle:
        return {row["voice"] for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_speech_benchmark_trains_both_arms_on_few_unseen_voices(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    bench = _bench()
    plan = bench.Plan(tmp_path, seeds=1, rows=[("de", 2)], en_voices=7, target_voices=8, takes=1,
                      pretrain_epochs=1, epochs=3, patience=1)
    table = bench.run(plan)
    en, de = _voices(tmp_path / "data" / "en"), _voices(tmp_path / "data" / "de")
    assert len(en) == 7 and len(de) == 8 and not en & de  # no German voice was heard in pre-training
    (seed,) = table[0]["seeds"]
    for arm in ("scratch", "finetune"):
        groups = seed[arm]["groups"]
        assert len(groups["train"]) == 2 and len(groups["test"]) == 4  # data.train_groups: 2 of the train split
        assert not set(groups["train"]) & set(groups["test"]) and set(groups["test"]) <= de
        assert 1 <= seed[arm]["epochs"] <= 3 and 0.0 <= seed[arm]["accuracy"] <= 1.0
    assert seed["scratch"]["groups"] == seed["finetune"]["groups"]  # the same split for both arms
    loaded = json.loads((tmp_path / "de2-finetune-0" / "pretrained.json").read_text())
    assert loaded["loaded"] and loaded["head"]  # English weights in, the head replaced (other labels)
    assert not (tmp_path / "de2-scratch-0" / "pretrained.json").exists()
    out = capsys.readouterr().out
    assert "| de | 2 |" in out and "fine-tuned from English" in out
