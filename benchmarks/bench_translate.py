"""Translation speed: sentences/s of greedy and beam search, batch 1 and 32, ONNX Runtime vs torch.

Both sides run the same numpy search (dlforge.decoding); only the engine differs: the exported encoder +
decoder-step graphs on ONNX Runtime, or the torch model. Sentences are the package's own test split.

    PYTHONPATH=src python benchmarks/bench_translate.py runs/translate_numbers/package [--sentences 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from dlforge.config import load_config
from dlforge.data.parallel import load_parallel
from dlforge.export.package import load_package
from dlforge.tasks.seq2seq.codec import Seq2SeqRuntime, TranslationCodec, torch_runtime


def sentences_per_s(codec: TranslationCodec, runtime: Seq2SeqRuntime, texts: list[str], batch: int) -> float:
    codec.translate(runtime, texts[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        codec.translate(runtime, texts[i:i + batch])
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both engines")
    args = parser.parse_args()
    package = load_package(args.package)
    cfg = load_config(package.path("config.yaml"))
    splits = load_parallel(cfg.data.dataset, cfg.data.params, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    texts = (list(splits.sources("test")) * args.sentences)[: args.sentences]
    codec = TranslationCodec(package)
    torch.set_num_threads(args.threads)
    engines = {"onnxruntime": Seq2SeqRuntime(package, args.threads), "torch": torch_runtime(package, args.threads)}
    beam = engines["torch"].settings.beam_size
    print(f"{args.package}: {len(texts)} sentences, {args.threads} thread(s); sentences/s (higher is better)")
    print(f"{'search':<10}{'batch':>6}{'onnxruntime':>14}{'torch':>10}{'ort/torch':>11}")
    for name, size in (("greedy", 1), (f"beam {beam}", beam)):
        for batch in (1, 32):
            speed = {}
            for kind, runtime in engines.items():
                runtime.settings = runtime.settings.model_copy(update={"beam_size": size})
                speed[kind] = sentences_per_s(codec, runtime, texts, batch)
            ratio = speed["onnxruntime"] / speed["torch"]
            print(f"{name:<10}{batch:>6}{speed['onnxruntime']:>14.1f}{speed['torch']:>10.1f}{ratio:>10.2f}x")


if __name__ == "__main__":
    main()
