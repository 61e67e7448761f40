"""Speech transfer (bench_finetune.py --task speech): pre-train `audio_cnn` once on English spoken digits, then
learn another language's digit words from a few voices — from scratch and fine-tuned, side by side per seed,
tested on voices that no run heard.

Data is made by `dlforge data spoken-digits`' own `generate`: English by `en_voices` voices, each target
language by voices none of the English ones (`exclude`). A target run splits its language's voices by voice:
half for test, some for validation (early stopping), and keeps `data.train_groups` of the rest for training.
Both arms get the same data, model, optimiser, epochs and early stopping; they differ only in
`model.pretrained` plus `train.freeze` / `unfreeze_at_epoch` (examples/digits_finetune.yaml's recipe).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlforge.config import parse_config
from dlforge.data.spoken_digits import GROUP_BY, generate
from dlforge.train.run import train_run

MODEL = {"arch": "audio_cnn", "params": {"sample_rate": 8000, "n_fft": 256, "hop": 100, "n_mels": 32,
                                         "channels": [16, 32, 64, 128]}}
AUGMENT = [{"time_shift": 0.1}, {"gain": [-6, 6]}, {"noise": {"snr_db": [10, 30], "p": 0.5}},
           {"freq_mask": {"max_bins": 6, "count": 2}}, {"time_mask": {"max_frames": 10, "count": 2}}]


@dataclass
class Plan:
    """What to generate and train; the defaults are the issue's benchmark (`--quick`: the wiring test's)."""

    out: Path
    seeds: int = 5
    rows: list[tuple[str, int]] = field(default_factory=lambda: [("de", 3), ("fr", 3), ("de", 5), ("de", 10)])
    en_voices: int = 59
    target_voices: int = 30
    takes: int = 8
    pretrain_epochs: int = 30
    epochs: int = 60  # at most, both arms; early stopping ends a run sooner
    patience: int = 15
    test_fraction: float = 0.5  # of a target language's voices: 15 of 30
    val_fraction: float = 0.15  # 5 of 30: leaves 10 to train on
    workers: int = 2  # voices synthesized at a time


def experiment(name: str, seed: int, path: Path, data: dict[str, Any], train: dict[str, Any],
               pretrained: str | None = None) -> Any:
    model = {**MODEL, **({"pretrained": pretrained} if pretrained else {})}
    params = {"path": str(path), "sample_rate": 8000, "duration": 1.0, "group_by": GROUP_BY}
    return parse_config({"name": name, "seed": seed, "data": {"dataset": "audio_folder", "params": params,
                                                               "workers": 0, **data},
                         "model": model, "augment": AUGMENT, "eval": {"plots": False}, "export": {"enabled": False},
                         "train": {"progress": False, "threads": 1, "loggers": [], **train}})


def make_data(plan: Plan) -> dict[str, Path]:
    """English and each target language, the targets by voices English does not use."""
    folders = {"en": plan.out / "data" / "en"}
    languages = sorted({lang for lang, _ in plan.rows})
    english = _generate(folders["en"], plan.en_voices, plan, "en", set())
    for lang in languages:
        folders[lang] = plan.out / "data" / lang
        _generate(folders[lang], plan.target_voices, plan, lang, set(english))
    return folders


def _generate(folder: Path, voices: int, plan: Plan, language: str, exclude: set[str]) -> list[str]:
    if (folder / "voices.csv").exists():  # made by an earlier run of the benchmark with the same plan
        return sorted({line.split(",")[1] for line in (folder / "voices.csv").read_text().splitlines()[1:]})
    done = generate(folder, voices, plan.takes, seed=0, language=language, exclude=exclude, workers=plan.workers)
    for voice, reason in done.skipped.items():
        print(f"warning: {language} voice {voice} skipped: {reason}", flush=True)
    return done.voices


def pretrain(plan: Plan, english: Path) -> tuple[Path, float]:
    run = plan.out / "pretrain-en"
    if not (run / "metrics.json").exists():
        train_run(experiment("pretrain_en", 0, english, {}, {
            "epochs": plan.pretrain_epochs, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3},
            "scheduler": {"warmup_epochs": 1}}), run, overwrite=True)
    return run, json.loads((run / "metrics.json").read_text())["accuracy"]


def arms(plan: Plan, pre: Path, folder: Path, lang: str, voices: int, seed: int) -> dict[str, Any]:
    """Scratch and fine-tuned on `voices` training voices of `lang`: test accuracy and epochs of each."""
    data = {"train_groups": voices, "val_fraction": plan.val_fraction, "test_fraction": plan.test_fraction}
    common = {"epochs": plan.epochs, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3},
              "scheduler": {"warmup_epochs": 1}, "early_stopping": {"patience": plan.patience}}
    tuned = {**common, "freeze": "backbone", "unfreeze_at_epoch": 3}
    result: dict[str, Any] = {}
    for arm, train, source in (("scratch", common, None), ("finetune", tuned, str(pre))):
        run = plan.out / f"{lang}{voices}-{arm}-{seed}"
        metrics = train_run(experiment(f"{lang}_{arm}", seed, folder, data, train, source), run, overwrite=True)
        facts = json.loads((run / "run.json").read_text())["data"]["split"]
        epochs = len((run / "history.jsonl").read_text().splitlines())
        result[arm] = {"accuracy": metrics["accuracy"], "epochs": epochs, "groups": facts["group_names"]}
    return result


def mean_sd(values: list[float], scale: float = 100.0) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):5.1f} ± {scale * sd:3.1f}"


def run(plan: Plan) -> list[dict[str, Any]]:
    """Every row of the plan; prints each seed as it ends and the table at the end."""
    started = time.perf_counter()
    folders = make_data(plan)
    pre, pre_accuracy = pretrain(plan, folders["en"])
    print(f"pre-trained on English ({plan.en_voices} voices): test accuracy {pre_accuracy:.4f} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    table = []
    for lang, voices in plan.rows:
        seeds = []
        for seed in range(plan.seeds):
            seeds.append(arms(plan, pre, folders[lang], lang, voices, seed))
            s, t = seeds[-1]["scratch"], seeds[-1]["finetune"]
            print(f"{lang} {voices} voices seed {seed}: scratch {s['accuracy']:.4f} ({s['epochs']} epochs)   "
                  f"fine-tuned {t['accuracy']:.4f} ({t['epochs']} epochs)   "
                  f"test voices {len(s['groups']['test'])}  ({time.perf_counter() - started:.0f} s)", flush=True)
        table.append({"language": lang, "voices": voices, "seeds": seeds})
    print_table(table, plan, time.perf_counter() - started)
    return table


def print_table(table: list[dict[str, Any]], plan: Plan, seconds: float) -> None:
    print(f"\ntest accuracy % on {plan.test_fraction:.0%} of each language's {plan.target_voices} voices (never "
          f"heard), mean ± sd over {plan.seeds} seeds; both arms ≤ {plan.epochs} epochs, early stopping "
          f"patience {plan.patience} on val_accuracy:")
    print("| language | training voices | from scratch | fine-tuned from English | paired gain | smallest gain "
          "| epochs (scratch / fine-tuned) |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        scratch = [s["scratch"]["accuracy"] for s in row["seeds"]]
        tuned = [s["finetune"]["accuracy"] for s in row["seeds"]]
        gain = [t - s for s, t in zip(scratch, tuned, strict=True)]
        epochs = [statistics.mean(s[arm]["epochs"] for s in row["seeds"]) for arm in ("scratch", "finetune")]
        print(f"| {row['language']} | {row['voices']} | {mean_sd(scratch)} | {mean_sd(tuned)} | {mean_sd(gain)} "
              f"| {100 * min(gain):+.1f} | {epochs[0]:.0f} / {epochs[1]:.0f} |")
    print(f"({seconds:.0f} s)")
