"""Transfer learning, fine-tuned against from scratch over several seeds: `--task digits` (the default)
pre-trains on digits 0–4 and fine-tunes on 5–9 with 10 % of their training labels; `--task speech`
pre-trains `audio_cnn` on English spoken digits and learns German (and French) digit words from 3, 5 and
10 voices (benchmarks/finetune_speech.py).

Every run goes through dlforge's own `train_run` (the same path as `dlforge train`); the only difference
between the two arms is `model.pretrained` plus `train.freeze` / `unfreeze_at_epoch`.

Beside them, a diagnostic of what there is to transfer: a logistic regression trained on the same few
labels over raw pixels, over the pre-trained network's convolutional features and over the features its
classifier reads (the model loaded through dlforge's own `load_pretrained`). When the pre-trained
features do no better than pixels, no fine-tuning recipe can gain much over a model from scratch.

    python benchmarks/bench_finetune.py [--seeds 5] [--fraction 0.1] [--out runs/bench_finetune]
    python benchmarks/bench_finetune.py --task speech [--seeds 5] [--rows de:3,fr:3,de:5,de:10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from dlforge.config import parse_config
from dlforge.data.samples import take
from dlforge.data.splits import load_data
from dlforge.nn.pretrained import classifier_name, load_pretrained
from dlforge.train.run import make_model, train_run

MODEL = {"arch": "cnn_small", "params": {"channels": [16, 32], "hidden": 64}}
FIRST, SECOND = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]


def experiment(name: str, seed: int, data: dict[str, Any], train: dict[str, Any],
               pretrained: str | None = None) -> Any:
    model = {**MODEL, **({"pretrained": pretrained} if pretrained else {})}
    return parse_config({"name": name, "seed": seed, "data": {"dataset": "digits", **data}, "model": model,
                         "train": {"progress": False, **train}, "eval": {"plots": False},
                         "export": {"enabled": False}})


def one_seed(seed: int, out: Path, fraction: float) -> dict[str, float]:
    pre_dir = out / f"pretrain-{seed}"
    pre = train_run(experiment("pretrain", seed, {"classes": FIRST},
                               {"epochs": 15, "batch_size": 32, "optimizer": {"lr": 3e-3}}), pre_dir, overwrite=True)
    few = {"classes": SECOND, "train_fraction": fraction}
    common = {"epochs": 20, "batch_size": 16, "optimizer": {"lr": 3e-3}, "scheduler": {"warmup_epochs": 1}}
    scratch = train_run(experiment("scratch", seed, few, common), out / f"scratch-{seed}", overwrite=True)
    tuned = train_run(experiment("finetune", seed, few, {**common, "freeze": "backbone", "unfreeze_at_epoch": 3},
                                 str(pre_dir)), out / f"finetune-{seed}", overwrite=True)
    return {"pretrain": pre["accuracy"], "scratch": scratch["accuracy"], "finetune": tuned["accuracy"],
            **probe(pre_dir, seed, few)}


def probe(pre_dir: Path, seed: int, few: dict[str, Any]) -> dict[str, float]:
    """Test accuracy of a logistic regression on the few labels: pixels vs the pre-trained features."""
    cfg = experiment("probe", seed, few, {"epochs": 1}, str(pre_dir))
    bundle = load_data(cfg.data, seed)
    net = make_model(cfg, bundle)
    assert cfg.model.pretrained is not None
    load_pretrained(net, load_file(pre_dir / "model.safetensors"), cfg.model.pretrained, bundle.num_classes)
    head = net.get_submodule(classifier_name(net, bundle.num_classes) or "")
    flatten = next(m for m in net.modules() if isinstance(m, nn.Flatten))
    seen: dict[str, Tensor] = {}
    flatten.register_forward_hook(lambda _m, _i, out: seen.__setitem__("convs", out))
    head.register_forward_pre_hook(lambda _m, args: seen.__setitem__("head_input", args[0]))

    def features(x: Tensor) -> dict[str, Any]:
        with torch.no_grad():
            net.eval()(x)
        return {"pixels": x.flatten(1).numpy(), **{k: v.numpy() for k, v in seen.items()}}

    (x_train, y_train), (x_test, y_test) = take(bundle.train), take(bundle.test)
    train, test = features(x_train), features(x_test)
    fit = {k: LogisticRegression(max_iter=5000).fit(train[k], y_train.numpy()) for k in train}
    return {f"probe_{k}": float(clf.score(test[k], y_test.numpy())) for k, clf in fit.items()}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    half = (max(values) - min(values)) / 2
    return f"{100 * mean:5.1f} ± {100 * half:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["digits", "speech"], default="digits")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.1, help="digits: share of the 5–9 training labels used")
    parser.add_argument("--rows", default="de:3,fr:3,de:5,de:10",
                        help="speech: language:training voices, comma-separated")
    parser.add_argument("--epochs", type=int, default=60, help="speech: at most, both arms (early stopping)")
    parser.add_argument("--patience", type=int, default=15, help="speech: early stopping, both arms")
    parser.add_argument("--pretrain-epochs", type=int, default=30, help="speech: English pre-training")
    parser.add_argument("--out", type=Path, default=None, help="default runs/bench_finetune[_speech]; data and "
                                                                "the English run found there are reused")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.task == "speech":
        from finetune_speech import Plan, run

        rows = [(lang, int(n)) for lang, n in (row.split(":") for row in args.rows.split(","))]
        run(Plan(args.out or Path("runs/bench_finetune_speech"), seeds=args.seeds, rows=rows, epochs=args.epochs,
                 patience=args.patience, pretrain_epochs=args.pretrain_epochs))
        return
    args.out = args.out or Path("runs/bench_finetune")
    started = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(seed, args.out, args.fraction))
        r = rows[-1]
        print(f"seed {seed}: pre-train (0–4) {r['pretrain']:.4f}   5–9 from scratch {r['scratch']:.4f}   "
              f"5–9 fine-tuned {r['finetune']:.4f}   probe: pixels {r['probe_pixels']:.4f}, "
              f"conv features {r['probe_convs']:.4f}, classifier input {r['probe_head_input']:.4f}", flush=True)
    scratch, tuned = [r["scratch"] for r in rows], [r["finetune"] for r in rows]
    gain = [t - s for s, t in zip(scratch, tuned, strict=True)]
    print(f"\ndigits 5–9, {args.fraction:.0%} of the training labels, test accuracy % over {args.seeds} seeds "
          "(mean ± half-range):")
    print(f"  from scratch            {spread(scratch)}")
    print(f"  fine-tuned from 0–4     {spread(tuned)}")
    print(f"  gain (paired per seed)  {spread(gain)} points; smallest {100 * min(gain):.1f}")
    print("\nwhat there is to transfer — logistic regression on the same labels, test accuracy %:")
    for key, what in (("pixels", "raw pixels"), ("convs", "pre-trained conv features"),
                      ("head_input", "pre-trained features the classifier reads")):
        print(f"  {what:<42}{spread([r[f'probe_{key}'] for r in rows])}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
