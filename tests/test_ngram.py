"""`ngram_bag` and `text_ngram` (fastText): shapes, which n-grams count, padding, and ONNX at any length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dlforge.config import DataConfig, ModelConfig
from dlforge.data.splits import load_data
from dlforge.export.onnx import export_onnx, input_dims, run_onnx, session
from dlforge.nn import ModelBuildError, build_model
from dlforge.nn.ngram import NgramBag, NgramBagParams
from dlforge.text import tokenizer_from_bytes


def _bag(**params: object) -> NgramBag:
    torch.manual_seed(0)
    return NgramBag(NgramBagParams.model_validate({"dim": 1, "buckets": 2**20, **params}))

LANGID = {"dataset": "langid", "params": {"languages": ["de", "en"], "per_language": 20, "vocabulary": 100,
                                          "tokenizer": {"kind": "char", "max_length": 40}}}


def _grad(bag: NgramBag, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How much each table row weighs in the output: its gradient under sum()."""
    bag.zero_grad()
    bag(ids, mask).sum().backward()
    grad = bag.table.weight.grad
    assert grad is not None
    return grad.flatten()


def _row_weights(bag: NgramBag, ids: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """The rows' weights that are not zero, largest last."""
    grad = _grad(bag, ids, mask)
    return sorted(round(g, 6) for g in grad[grad != 0].tolist())


def test_a_layer_list_infers_the_bag_width() -> None:
    cfg = ModelConfig(layers=[{"ngram_bag": {"dim": 6, "buckets": 64}}, {"dense": 3}])
    net = build_model(cfg, (10,), 3, integer_input=True, pad_id=0)
    assert net(torch.randint(1, 30, (4, 7))).shape == (4, 3)


def test_the_bag_refuses_embedded_vectors_and_float_inputs() -> None:
    after_embedding = ModelConfig(layers=[{"embedding": {"vocab_size": 30, "dim": 4}}, {"ngram_bag": 6}, {"dense": 3}])
    with pytest.raises(ModelBuildError, match=r"ngram_bag expects an input of token ids \(steps,\)"):
        build_model(after_embedding, (10,), 3, integer_input=True, pad_id=0)
    with pytest.raises(ModelBuildError, match="ngram_bag takes token ids"):
        build_model(ModelConfig(layers=[{"ngram_bag": 6}, {"dense": 3}]), (10,), 3)


def test_max_n_below_min_n_is_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="max_n .* must be at least min_n"):
        NgramBagParams(dim=4, min_n=3, max_n=2)


def test_each_ngram_inside_the_text_counts_once_and_the_boundary_marks_its_ends() -> None:
    """'ab' with boundaries is <, a, b, > (the two boundary unigrams share a row) and <a, ab, b>: 7 n-grams."""
    ids, mask = torch.tensor([[5, 6]]), torch.tensor([[True, True]])
    assert _row_weights(_bag(max_n=2), ids, mask) == [round(1 / 7, 6)] * 5 + [round(2 / 7, 6)]
    assert _row_weights(_bag(max_n=2, boundary=False), ids, mask) == [round(1 / 3, 6)] * 3  # a, b, ab
    assert _row_weights(_bag(min_n=3, max_n=3), ids, mask) == [0.5, 0.5]  # <ab, ab>


def test_with_a_separator_ngrams_stay_within_words_and_texts_end_like_words() -> None:
    """'ab cd' (space = id 2) is read as ' ab cd ': its 3-grams are ' ab', 'ab ', ' cd', 'cd ' ('b c' spans
    two words), as scikit-learn's char_wb sees them; the text's ends look like the space between words."""
    ids = torch.tensor([[5, 6, 2, 7, 8]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert _row_weights(_bag(min_n=3, max_n=3, separator=2), ids, mask) == [0.25] * 4
    bag = _bag(min_n=2, max_n=2, separator=2)  # ' a', 'ab', 'b ' of 'ab' are those of ' ab ' inside a text
    alone = set(torch.nonzero(_grad(bag, torch.tensor([[5, 6]]))).flatten().tolist())
    inside = set(torch.nonzero(_grad(bag, torch.tensor([[7, 2, 5, 6, 2, 8]]))).flatten().tolist())
    assert len(alone) == 3 and alone < inside


def test_an_ngram_touching_padding_never_counts() -> None:
    """Whatever the padded steps hold, only the real tokens (and the boundary just past them) are hashed."""
    bag = _bag(max_n=4)
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]])
    mask = ids != 0
    garbage = torch.tensor([[5, 6, 7, 9, 11, 13]])
    expected = _row_weights(bag, ids[:, :3], mask[:, :3])
    assert _row_weights(bag, ids, mask) == expected
    assert _row_weights(bag, garbage, mask) == expected
    assert len(expected) == 4 + 4 + 3 + 2  # 1..4-grams over < a b c >; < and > as unigrams share a row
    with torch.no_grad():
        assert torch.allclose(bag(garbage, mask), bag(ids[:, :3], mask[:, :3]), atol=1e-7)


def test_text_ngram_exports_with_dynamic_batch_and_tokens(tmp_path: Path) -> None:
    """Hashing inside the graph (int64 multiply and modulo) gives torch's buckets at any length."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="text_ngram_tiny"), (24,), 3, integer_input=True, pad_id=0).eval()
    example = torch.randint(1, 30, (8, 24))
    example[:4, 10:] = 0
    path = tmp_path / "m.onnx"
    export_onnx(net, example, path, 18, integer_input=True)
    assert input_dims(path) == ["batch", "sequence"]
    sess = session(path)
    for batch, steps in [(3, 5), (2, 40), (2, 1)]:
        x = torch.randint(1, 30, (batch, steps))
        x[0, steps // 2 + 1 :] = 0
        logits, _ = run_onnx(sess, x.numpy())
        with torch.no_grad():
            assert np.abs(logits - net(x).numpy()).max() < 1e-5


def test_text_ngram_keeps_its_ngrams_within_the_tokenizers_words() -> None:
    """The char tokenizer's space id reaches the bag as its separator (unless within_words is off)."""
    data = load_data(DataConfig.model_validate(LANGID), 0)
    space = tokenizer_from_bytes(data.artifacts["tokenizer.json"]).token_to_id(" ")
    assert data.preprocessing.space_id == space is not None

    def bag(**params: object) -> NgramBag:
        net = build_model(ModelConfig(arch="text_ngram_tiny", params=params), data.input_shape, data.num_classes,
                          True, pad_id=0, vocab_size=data.preprocessing.vocab_size, space_id=space)
        return next(m for m in net.modules() if isinstance(m, NgramBag))

    assert bag().words and bag().edge == space + 1
    assert not bag(within_words=False).words
