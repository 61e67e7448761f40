"""Exporting a seq2seq model: the two graphs, then parity = identical translations from torch and ORT.

Both sides run the same numpy search (greedy and the configured beam) on real validation sentences; a
single differing string fails the export. The largest log-probability difference is recorded too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tokenizers import Tokenizer

from dlforge.config import ExperimentConfig
from dlforge.data.samples import take
from dlforge.data.splits import DataBundle
from dlforge.decoding import SearchSettings, Special, search
from dlforge.decoding.onnx_engine import OnnxEngine
from dlforge.export.errors import ExportError
from dlforge.nn.seq2seq import Seq2SeqModel
from dlforge.nn.seq2seq.engine import TorchEngine
from dlforge.preprocessing import TranslationPreprocessing
from dlforge.tasks.seq2seq.graphs import ENCODER_FILE, STEP_FILE, export_seq2seq
from dlforge.text import decode

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

PARITY_SENTENCES = 64
SRC, IDS = "src", "ids"


def _step_diff(model: Seq2SeqModel, onnx: OnnxEngine, src: np.ndarray, bos: int) -> float:
    """Max |log p| difference of the first two decoder steps (the numbers behind the strings)."""
    torch_engine = TorchEngine(model, torch.device("cpu"))
    a, b = torch_engine.encode(src), onnx.encode(src)
    tokens, worst = np.full(len(src), bos, dtype=np.int64), 0.0
    for _ in range(2):
        (pa, a), (pb, b) = torch_engine.step(tokens, a), onnx.step(tokens, b)
        worst = max(worst, float(np.abs(pa - pb).max()))
        tokens = pa.argmax(-1).astype(np.int64)
    return worst


def check_parity(model: Seq2SeqModel, onnx: OnnxEngine, src: np.ndarray, special: Special,
                 settings: SearchSettings, tok: Tokenizer) -> dict[str, int]:
    """Translations of `src` by torch and by the graphs, greedy and beam; ExportError on any difference."""
    counts = {}
    torch_engine = TorchEngine(model, torch.device("cpu"))
    for name, s in (("greedy", settings.model_copy(update={"beam_size": 1})), ("beam", settings)):
        expected = [decode(tok, ids) for ids in search(torch_engine, src, special, s)]
        got = [decode(tok, ids) for ids in search(onnx, src, special, s)]
        wrong = [i for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g]
        if wrong:
            i = wrong[0]
            raise ExportError(f"{STEP_FILE}: ONNX Runtime translates {len(wrong)} of {len(src)} validation sentences "
                              f"differently from torch ({name}); e.g. sentence {i}: {got[i]!r} vs {expected[i]!r}")
        counts[f"identical_{name}"] = len(src)
    return counts


def export_package_graphs(model: Seq2SeqModel, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig,
                          root: Path, tolerance: float, tok: Tokenizer) -> dict[str, Any]:
    prep = TranslationPreprocessing.of(info.preprocessing)
    special = Special(prep.bos_id, prep.eos_id)
    settings = SearchSettings.model_validate(prep.decoding)
    src_t: torch.Tensor = take(bundle.val, PARITY_SENTENCES)[0]
    src_t = src_t[:, : max(1, int((src_t != 0).sum(1).max()))]
    encoder, step = export_seq2seq(model.eval(), src_t, special.bos, root, cfg.export.opset)
    onnx = OnnxEngine(encoder, step)
    src = src_t.numpy()
    diff = _step_diff(model, onnx, src, special.bos)
    if not diff <= tolerance:
        raise ExportError(f"{STEP_FILE}: log-probabilities differ from torch by {diff:.3g} (tolerance "
                          f"{tolerance:g}); set export.tolerance if this is expected")
    parity = check_parity(model, onnx, src, special, settings, tok)
    return {
        "inputs": [{"name": SRC, "datatype": "INT64", "shape": [-1, -1]}],
        "outputs": [{"name": IDS, "datatype": "INT64", "shape": [-1, -1]}],
        "labels": [], "preprocessing": prep, "graphs": [ENCODER_FILE, STEP_FILE],
        "onnx": {"opset": cfg.export.opset, "parity_max_abs_diff": diff, "tolerance": tolerance,
                 "parity_samples": len(src)},
        "task_info": {"decoding": settings.model_dump(), "parity": parity},
    }
