"""Seq2seq models: one decoder step at a time gives the teacher-forced logits; padding changes nothing."""

import pytest
import torch

from dlforge.config import ConfigError
from dlforge.nn.build import ModelBuildError
from dlforge.nn.seq2seq import SEQ2SEQ_MODELS, Vocab, build_seq2seq
from dlforge.nn.seq2seq.layer_encoder import LayerEncoder

VOCAB = Vocab(src_size=11, tgt_size=13, pad_id=0, max_source=10)
VARIANTS = [(name, {}) for name in SEQ2SEQ_MODELS.names() if name.endswith("_tiny")] + [
    ("rnn_attention_tiny", {"cell": "lstm", "attention": "luong", "layers": 2}),
    ("transformer_tiny", {"norm_first": False, "decoder_layers": 2}),
    # layer-list encoders (#12): a bidirectional GRU stack, and self-attention over learned positions
    ("rnn_attention_tiny", {"encoder": [{"embedding": 8}, {"gru": {"hidden": 6, "bidirectional": True,
                                                                     "return_sequences": True}}]}),
    ("rnn_attention_tiny", {"cell": "lstm", "attention": "luong", "encoder": [
        {"embedding": 8}, "positional", {"transformer_encoder": {"heads": 2, "dropout": 0.0}}]}),
]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(3, 11, (4, 7), generator=gen)
    src[1, 5:] = 0
    src[2, 2:] = 0
    return src, torch.randint(3, 13, (4, 6), generator=gen)


@pytest.mark.parametrize(("arch", "params"), VARIANTS)
def test_stepwise_decoding_matches_teacher_forcing(arch: str, params: dict) -> None:
    torch.manual_seed(0)
    model = build_seq2seq(arch, params, VOCAB).eval()
    src, tgt = _batch()
    with torch.no_grad():
        full = model(src, tgt)
        state, steps = model.encode(src), []
        for t in range(tgt.shape[1]):
            logits, updated = model.step(tgt[:, t], state)
            state = {**state, **updated}
            steps.append(logits)
        assert set(updated) == set(model.dynamic_keys)
        assert all(v.shape[0] == len(src) for v in state.values())  # batch on axis 0 everywhere
        padded = model(torch.cat([src, torch.zeros(4, 3, dtype=torch.long)], dim=1), tgt)
    assert full.shape == (4, 6, 13)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, full, atol=1e-5, rtol=1e-5)


def test_every_architecture_builds_and_bad_params_name_the_key() -> None:
    for name in SEQ2SEQ_MODELS.names():
        assert sum(p.numel() for p in build_seq2seq(name, {}, VOCAB).parameters()) > 0
    with pytest.raises(ConfigError, match=r"model.params: .*d_model 30 must be even and divisible by heads 4"):
        build_seq2seq("transformer", {"d_model": 30, "heads": 4}, VOCAB)
    with pytest.raises(ConfigError, match=r"model.params.cel: unknown key — did you mean 'cell'"):
        build_seq2seq("gru_attention", {"cel": "lstm"}, VOCAB)
    with pytest.raises(ConfigError, match=r"model.arch: unknown seq2seq architecture 'transfomer' — did you mean"):
        build_seq2seq("transfomer", {}, VOCAB)


def test_a_layer_list_encoder_replaces_the_built_in_one_and_bad_lists_say_why() -> None:
    layers = [{"embedding": 8}, {"lstm": {"hidden": 5, "return_sequences": True}}]
    model = build_seq2seq("rnn_attention_tiny", {"encoder": layers}, VOCAB)
    assert isinstance(model.encoder, LayerEncoder) and model.encoder.body[0].num_embeddings == VOCAB.src_size
    assert model.key.in_features == 5  # the decoder attends over the list's output width
    with pytest.raises(ModelBuildError, match=r"model.params.encoder: must return one vector per source step"):
        build_seq2seq("rnn_attention_tiny", {"encoder": [{"embedding": 8}, {"gru": 5}]}, VOCAB)  # last step only
    with pytest.raises(ModelBuildError, match=r"model.params.encoder\[0\].vocab_size: comes from the source"):
        build_seq2seq("rnn_attention_tiny", {"encoder": [{"embedding": {"dim": 8, "vocab_size": 99}}]}, VOCAB)
    with pytest.raises(ConfigError, match=r"model.params.encoder\[1\]: unknown layer 'gruu'"):
        build_seq2seq("rnn_attention_tiny", {"encoder": [{"embedding": 8}, {"gruu": 5}]}, VOCAB)
