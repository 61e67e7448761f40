"""The torch runtime rebuilds a package with the run's own recipe (item 9 of #18), token models included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.export.package import export_run, load_package
from dlforge.serve.runtime import load_runtime
from dlforge.train.run import train_run
from tests.conftest import tiny_config


def test_torch_runtime_serves_a_token_model_like_onnx(tmp_path: Path) -> None:
    data = {"dataset": "synthetic", "params": {"kind": "tokens", "shape": [12], "vocab_size": 16, "n_samples": 64}}
    train_run(tiny_config(data=data, model={"arch": "rnn_tiny", "params": {"vocab_size": 16}},
                          train={"epochs": 1, "batch_size": 16}), tmp_path / "run")
    package = load_package(export_run(tmp_path / "run"))
    assert "run.json" in package.manifest.files
    tokens = np.random.default_rng(0).integers(0, 16, (3, 12)).astype(np.int64)
    torch_out = load_runtime("torch", package, 1).infer({"input": tokens})
    onnx_out = load_runtime("onnx", package, 1).infer({"input": tokens})
    assert np.allclose(torch_out["probabilities"], onnx_out["probabilities"], atol=1e-5)
    longer = np.random.default_rng(1).integers(0, 16, (2, 20)).astype(np.int64)  # the sequence axis is dynamic
    assert load_runtime("torch", package, 1).infer({"input": longer})["logits"].shape == (2, 4)
