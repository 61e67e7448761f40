"""Spoken digits: the CNN against a scikit-learn baseline on the same speaker-independent split, and speed.

    dlforge data spoken-digits --out data/spoken_digits
    dlforge run examples/spoken_digits.yaml                  # → runs/spoken_digits (metrics, package)
    python benchmarks/bench_audio.py [--run runs/spoken_digits]

Prints, side by side:
- test accuracy on voices never heard in training: the CNN (metrics.json of the run) vs logistic
  regression and an RBF SVM on per-clip MFCC means (and standard deviations), fitted on the run's
  train split;
- the CNN's confusion matrix;
- batch-1 latency of front-end + model: torch eager vs ONNX Runtime, with the STFT as a fixed-DFT
  conv1d (`stft: conv`) and as ONNX's STFT op (`stft: onnx`), the same weights;
- training clips/s (the loop's own measurement, from history.jsonl).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from dlforge.config import ModelConfig
from dlforge.data.samples import take
from dlforge.data.splits import load_data
from dlforge.export.onnx import INPUT, export_onnx, session
from dlforge.nn import build_model
from dlforge.nn.audio import Mfcc, MfccParams
from dlforge.preprocessing import AudioPreprocessing
from dlforge.rundir import load_run


def mfcc_stats(wave: torch.Tensor, frontend: Mfcc) -> np.ndarray:
    """Per-clip mean and standard deviation of each MFCC over time: the classic bag-of-frames features."""
    with torch.no_grad():
        feats = torch.cat([frontend(chunk)[:, 0] for chunk in wave.split(256)])
    return torch.cat([feats.mean(-1), feats.std(-1)], dim=1).numpy()


def baselines(run: Path) -> dict[str, float]:
    cfg, info, _ = load_run(run)
    bundle = load_data(cfg.data, cfg.seed)  # the run's own split: the same unseen test voices
    front = cfg.model.params if cfg.model.arch else cfg.model.layers[0].params  # type: ignore[index]
    rate = AudioPreprocessing.of(info.preprocessing).sample_rate
    frontend = Mfcc(MfccParams(sample_rate=rate, n_fft=front.get("n_fft", 512), hop=front.get("hop", 160),
                               n_mels=front.get("n_mels", 40), n_mfcc=20))
    (x_train, y_train), (x_test, y_test) = take(bundle.train), take(bundle.test)
    f_train, f_test = mfcc_stats(x_train, frontend), mfcc_stats(x_test, frontend)
    n = f_train.shape[1] // 2  # the first half are the means
    out = {}
    for name, clf, cols in (("logreg, MFCC means", LogisticRegression(max_iter=3000), slice(0, n)),
                            ("logreg, MFCC means+stds", LogisticRegression(max_iter=3000), slice(None)),
                            ("SVM (RBF), MFCC means+stds", SVC(C=10.0), slice(None))):
        model = make_pipeline(StandardScaler(), clf).fit(f_train[:, cols], y_train.numpy())
        out[name] = float(model.score(f_test[:, cols], y_test.numpy()))
    groups = bundle.split_groups or {}
    print(f"split by voice: {len(groups.get('train', []))} train / {len(groups.get('val', []))} val / "
          f"{len(groups.get('test', []))} test voices; test voices: {', '.join(groups.get('test', []))}")
    return out


def latency_ms(fn: object, x: np.ndarray, repeats: int) -> float:
    call = fn  # type: ignore[assignment]
    for _ in range(10):
        call(x)  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(x)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def speed(run: Path, repeats: int) -> dict[str, float]:
    cfg, info, net = load_run(run)
    x = np.random.default_rng(0).standard_normal((1, *info.input_shape)).astype(np.float32) * 0.1
    out: dict[str, float] = {}
    with torch.no_grad():
        out["torch eager (stft: conv)"] = latency_ms(lambda a: net(torch.from_numpy(a)), x, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        for stft in ("conv", "onnx"):
            variant = _with_stft(cfg.model, stft, net, tuple(info.input_shape), len(info.labels))
            path = Path(tmp) / f"{stft}.onnx"
            export_onnx(variant, torch.from_numpy(x).repeat(2, 1), path, cfg.export.opset)
            sess = session(path)
            out[f"ONNX Runtime (stft: {stft})"] = latency_ms(lambda a, s=sess: s.run(None, {INPUT: a}), x, repeats)
    return out


def _with_stft(model: ModelConfig, stft: str, trained: torch.nn.Module, shape: tuple[int, ...],
               classes: int) -> torch.nn.Module:
    """The trained network with its front-end's STFT implementation swapped (the filterbanks are derived)."""
    if model.arch:
        variant = model.model_copy(update={"params": {**model.params, "stft": stft}})
    else:
        layers = [s.model_copy(deep=True) for s in model.layers or []]
        layers[0].params["stft"] = stft
        variant = model.model_copy(update={"layers": layers})
    net = build_model(variant, shape, classes)
    net.load_state_dict(trained.state_dict())
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/spoken_digits"), help="a finished run directory")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metrics = json.loads((args.run / "metrics.json").read_text())
    history = [json.loads(line) for line in (args.run / "history.jsonl").read_text().splitlines()]
    base = baselines(args.run)
    print("\ntest accuracy on unseen voices")
    print(f"  CNN ({args.run.name}): {metrics['accuracy']:.4f} (macro F1 {metrics['f1']:.4f})")
    for name, acc in base.items():
        print(f"  {name}: {acc:.4f}")
    print(f"  CNN - best baseline: {metrics['accuracy'] - max(base.values()):+.4f}")
    labels = json.loads((args.run / "run.json").read_text())["labels"]
    print("\nconfusion matrix (rows: true, columns: predicted):", ", ".join(labels))
    for row in metrics["confusion_matrix"]:
        print("  " + " ".join(f"{v:4d}" for v in row))
    print(f"\nbatch-1 latency, front-end + model, {args.threads} thread(s), median of {args.repeats}")
    lat = speed(args.run, args.repeats)
    for name, ms in lat.items():
        print(f"  {name}: {ms:.3f} ms")
    conv, op = lat["ONNX Runtime (stft: conv)"], lat["ONNX Runtime (stft: onnx)"]
    print(f"  ORT with the conv STFT is {op / conv:.2f}x faster than with the STFT op and "
          f"{lat['torch eager (stft: conv)'] / conv:.2f}x faster than torch eager")
    rates = [h["samples_per_s"] for h in history]
    print(f"\ntraining: {statistics.median(rates):,.0f} clips/s (median over {len(rates)} epochs; best "
          f"{max(rates):,.0f}), augmentation and front-end included")


if __name__ == "__main__":
    main()
