"""int8 with ONNX Runtime: static QDQ (calibrated on training samples) for conv nets, dynamic otherwise.

Static quantization needs activation ranges, which conv nets benefit from; dense/RNN models get
dynamic quantization (weights int8, activations quantized on the fly), which needs no calibration.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import Tensor, nn

from dlforge.export.onnx import INPUT, run_onnx, session
from dlforge.export.package import INT8_FILE, ONNX_FILE


class SampleReader:
    """onnxruntime CalibrationDataReader over a fixed set of (training) samples, a few at a time."""

    def __init__(self, x: np.ndarray, batch: int = 16) -> None:
        self.batches = iter([{INPUT: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def has_conv(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv1d | nn.Conv2d) for m in net.modules())


def quantize_onnx(src: Path, dst: Path, calibration: np.ndarray | None) -> str:
    """Write an int8 model; static QDQ when calibration samples are given. Returns the method's name."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_suffix(".prep.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    try:
        if calibration is None:
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)
            return "dynamic (onnxruntime quantize_dynamic, int8 weights)"
        quantize_static(str(prepared), str(dst), SampleReader(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
        return f"static QDQ (onnxruntime quantize_static, per-channel, {len(calibration)} calibration samples)"
    finally:
        prepared.unlink(missing_ok=True)


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    logits, _ = run_onnx(session(path), x)
    return float((logits.argmax(1) == y).mean())


def latency_ms(path: Path, sample: np.ndarray, runs: int = 200) -> float:
    """Median batch-1 latency of ONNX Runtime (after warm-up), in milliseconds."""
    sess = session(path)
    feed = {INPUT: sample[:1]}
    for _ in range(10):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def quantize_package(net: nn.Module, root: Path, calibration: Tensor, x_test: Tensor, y_test: Tensor) -> dict[str, Any]:
    """Write root/model.int8.onnx and measure it against fp32 (test accuracy, batch-1 latency)."""
    fp32, int8 = root / ONNX_FILE, root / INT8_FILE
    method = quantize_onnx(fp32, int8, calibration.numpy() if has_conv(net) else None)
    onnx.checker.check_model(str(int8))
    x, y = x_test.numpy(), y_test.numpy()
    return {"file": INT8_FILE, "method": method, "accuracy": accuracy(int8, x, y),
            "fp32_accuracy": accuracy(fp32, x, y), "latency_ms_batch1": latency_ms(int8, x),
            "fp32_latency_ms_batch1": latency_ms(fp32, x)}
