"""The denoiser's serving side (torch-free): images in, images out; `dlforge predict` writes PNGs."""

from __future__ import annotations

from typing import Any

from dlforge.taskapi import Codec, Predictions, PredictRequest, Serving, TaskError


class DenoiseServing(Serving):
    name = "denoise"

    def codec(self, package: Any) -> Codec:
        from dlforge.tasks.denoise.codec import ImageToImageCodec

        return ImageToImageCodec(package.manifest)

    def predict(self, package: Any, request: PredictRequest) -> Predictions:
        from dlforge.tasks.denoise.predict import TAKES, denoise_files

        if request.texts:
            raise TaskError(f"--text: {TAKES}")
        written = denoise_files(package, request.files, request.out)
        return Predictions(["input", "denoised"], [{"file": str(src), "denoised": str(out)}
                                                   for src, out in zip(request.files, written, strict=True)],
                           written=written)


SERVING = DenoiseServing()
