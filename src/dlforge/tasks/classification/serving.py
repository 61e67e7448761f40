"""Classification's serving side (torch-free): codecs by input kind, the torch engine, `dlforge predict`."""

from __future__ import annotations

from typing import Any

from dlforge.taskapi import Codec, Engine, Predictions, PredictRequest, Serving


class ClassificationServing(Serving):
    name = "classification"

    def codec(self, package: Any) -> Codec:
        from dlforge.preprocessing import TextPreprocessing
        from dlforge.tasks.classification.codec import TensorCodec, TextCodec

        if isinstance(package.manifest.preprocessing, TextPreprocessing):
            return TextCodec(package)
        return TensorCodec(package.manifest)

    def runtime(self, kind: str, package: Any, threads: int) -> Engine | None:
        if kind == "torch":
            from dlforge.tasks.classification.runtime import TorchRuntime

            return TorchRuntime(package, threads)
        return super().runtime(kind, package, threads)

    def predict(self, package: Any, request: PredictRequest) -> Predictions:
        from dlforge.tasks.classification.predict import predict_files

        results = predict_files(package, request.files, request.top_k, request.int8, request.texts)
        rows = [{"file": r.source, "top": [{"label": lb, "probability": p} for lb, p in r.top]} for r in results]
        table = [[r.source if rank == 0 else "", label, f"{p:.4f}"]
                 for r in results for rank, (label, p) in enumerate(r.top)]
        return Predictions(["input", "label", "probability"], rows, table)


SERVING = ClassificationServing()
