"""Named architectures, each expanded to a plain layer list (one build path for everything).

Tiny presets sit next to the real ones so tests can build and train every model in a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from dlforge.config import ComponentSpec, ConfigError
from dlforge.config.components import Component
from dlforge.config.errors import problems_from
from dlforge.nn.layers import Params, Shape
from dlforge.registry import Registry, RegistryError

MODELS: Registry[Component[Any]] = Registry("model architecture", plugins="dlforge.archs")
Spec = dict[str, Any]


def _spec(layers: list[Any]) -> list[ComponentSpec]:
    return [ComponentSpec.model_validate(layer) for layer in layers]


class CnnParams(Params):
    channels: list[int] = Field([32, 64], min_length=1, description="conv channels per stage")
    hidden: int = Field(128, ge=1)
    dropout: float = Field(0.25, ge=0, lt=1)
    batchnorm: bool = True


def cnn(p: CnnParams, shape: Shape, num_classes: int) -> list[Any]:
    """Conv stages (conv-bn-relu ×2, then pool while the image is large enough), then a dense head."""
    layers: list[Any] = []
    size = min(shape[1:]) if len(shape) == 3 else 0
    for ch in p.channels:
        for _ in range(2):
            layers += [{"conv2d": {"channels": ch, "kernel": 3}}]
            layers += ["batchnorm2d"] if p.batchnorm else []
            layers += ["relu"]
        if size >= 4:
            layers.append({"maxpool2d": 2})
            size //= 2
    return [*layers, "flatten", {"dropout": p.dropout}, {"dense": p.hidden}, "relu",
            {"dropout": p.dropout}, {"dense": num_classes}]


class MlpParams(Params):
    hidden: list[int] = Field([256, 128], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["relu", "gelu", "tanh"] = "relu"


def mlp(p: MlpParams, shape: Shape, num_classes: int) -> list[Any]:
    layers: list[Any] = ["flatten"] if len(shape) > 1 else []
    for units in p.hidden:
        layers += [{"dense": units}, p.activation, {"dropout": p.dropout}]
    return [*layers, {"dense": num_classes}]


class ResNetParams(Params):
    width: int = Field(64, ge=1, description="channels of the first stage (doubles each stage)")
    stem: Literal["auto", "small", "imagenet"] = Field(
        "auto", description="small: 3x3 conv (CIFAR-style); imagenet: 7x7/2 + maxpool; auto by size")


def _basic_block(channels: int, stride: int) -> Spec:
    conv = {"channels": channels, "kernel": 3, "bias": False}
    return {"residual": {
        "layers": [{"conv2d": {**conv, "stride": stride}}, "batchnorm2d", "relu",
                   {"conv2d": conv}, "batchnorm2d"],
        "activation": "relu", "projection_norm": True}}


def _resnet(blocks: list[int]) -> Callable[[ResNetParams, Shape, int], list[Any]]:
    def expand(p: ResNetParams, shape: Shape, num_classes: int) -> list[Any]:
        large = p.stem == "imagenet" or (p.stem == "auto" and len(shape) == 3 and min(shape[1:]) >= 96)
        stem: list[Any] = [{"conv2d": {"channels": p.width, "kernel": 7 if large else 3,
                                       "stride": 2 if large else 1, "bias": False}}, "batchnorm2d", "relu"]
        if large:
            stem.append({"maxpool2d": {"kernel": 3, "stride": 2, "padding": 1}})
        body = []
        for stage, count in enumerate(blocks):
            for i in range(count):
                body.append(_basic_block(p.width * 2**stage, 2 if stage > 0 and i == 0 else 1))
        return [*stem, *body, "adaptive_avgpool2d", "flatten", {"dense": num_classes}]

    return expand


class RnnParams(Params):
    cell: Literal["lstm", "gru"] = "lstm"
    hidden: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    vocab_size: int | None = Field(None, ge=1, description="token inputs: embed first")
    embedding_dim: int = Field(64, ge=1)


def rnn(p: RnnParams, shape: Shape, num_classes: int) -> list[Any]:
    embed = [{"embedding": {"vocab_size": p.vocab_size, "dim": p.embedding_dim}}] if p.vocab_size else []
    cell = {p.cell: {"hidden": p.hidden, "num_layers": p.num_layers, "bidirectional": p.bidirectional}}
    return [*embed, cell, {"dense": num_classes}]


class AudioCnnParams(Params):
    frontend: Literal["melspectrogram", "mfcc"] = "melspectrogram"
    sample_rate: int = Field(16000, ge=1000, description="Hz; must equal data.params.sample_rate")
    n_fft: int = Field(512, ge=16)
    hop: int = Field(160, ge=1)
    n_mels: int = Field(40, ge=1)
    n_mfcc: int = Field(20, ge=1, description="mfcc front-end only")
    stft: Literal["conv", "onnx"] = "conv"
    normalize: bool = Field(True, description="per-clip mean/variance normalisation of the features")
    channels: list[int] = Field([16, 32, 64], min_length=1, description="conv channels per stage")
    dropout: float = Field(0.2, ge=0, lt=1)


def audio_cnn(p: AudioCnnParams, shape: Shape, num_classes: int) -> list[Any]:
    """Waveform → log-mel (or MFCC) → batchnorm → conv stages → average over time → dense.

    Pooling over time only keeps which frequency bands are active (formants tell digits apart)
    while any position of the word in the clip gives the same features.
    """
    front = {k: getattr(p, k) for k in ("sample_rate", "n_fft", "hop", "n_mels", "stft", "normalize")}
    if p.frontend == "mfcc":
        front["n_mfcc"] = p.n_mfcc
    layers: list[Any] = [{p.frontend: front}, "batchnorm2d"]
    bins = p.n_mfcc if p.frontend == "mfcc" else p.n_mels
    for ch in p.channels:
        layers += [{"conv2d": {"channels": ch, "kernel": 3, "bias": False}}, "batchnorm2d", "relu"]
        if bins >= 4:
            layers.append({"maxpool2d": 2})
            bins //= 2
    return [*layers, {"adaptive_avgpool2d": [bins, 1]}, "flatten", {"dropout": p.dropout}, {"dense": num_classes}]



class TextRnnParams(Params):
    cell: Literal["lstm", "gru"] = "gru"
    embedding_dim: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0, lt=1)
    pooling: Literal["last", "mean", "max", "attention"] = "max"
    vocab_size: int | None = Field(None, ge=2, description="default: the data's tokenizer")


def _vocab(p: TextRnnParams | TextCnnParams | TextTransformerParams, arch: str) -> int:
    if p.vocab_size is None:
        raise ConfigError([f"model.params.vocab_size: {arch} needs token ids; use a text dataset (its tokenizer "
                           "sets the vocabulary) or set vocab_size"])
    return p.vocab_size


def text_rnn(p: TextRnnParams, shape: Shape, num_classes: int) -> list[Any]:
    """Embedding → (bi)LSTM/GRU stack → pooling over the real tokens → dense."""
    rnn = {"hidden": p.hidden, "num_layers": p.num_layers, "bidirectional": p.bidirectional,
           "dropout": p.dropout, "return_sequences": True}
    return [{"embedding": {"vocab_size": _vocab(p, "text_rnn"), "dim": p.embedding_dim, "padding_idx": 0}},
            {"dropout": p.dropout}, {p.cell: rnn}, {"pool": p.pooling}, {"dropout": p.dropout},
            {"dense": num_classes}]


class TextCnnParams(Params):
    embedding_dim: int = Field(64, ge=1)
    channels: list[int] = Field([256], min_length=1, description="one step_conv each")
    kernel: int = Field(3, ge=1, description="steps each convolution sees")
    dropout: float = Field(0.2, ge=0, lt=1)
    pooling: Literal["last", "mean", "max", "attention"] = "max"
    vocab_size: int | None = Field(None, ge=2, description="default: the data's tokenizer")


def text_cnn(p: TextCnnParams, shape: Shape, num_classes: int) -> list[Any]:
    """Embedding → convolutions along the tokens (n-gram detectors) → pooling over the real tokens → dense."""
    return [{"embedding": {"vocab_size": _vocab(p, "text_cnn"), "dim": p.embedding_dim, "padding_idx": 0}},
            {"dropout": p.dropout}, *[{"step_conv": {"channels": c, "kernel": p.kernel}} for c in p.channels],
            {"pool": p.pooling}, {"dropout": p.dropout}, {"dense": num_classes}]


class TextTransformerParams(Params):
    dim: int = Field(128, ge=1)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff: int | None = Field(None, ge=1, description="feed-forward width (default 4 × dim)")
    dropout: float = Field(0.1, ge=0, lt=1)
    pooling: Literal["last", "mean", "max", "attention"] = "mean"
    vocab_size: int | None = Field(None, ge=2, description="default: the data's tokenizer")


def text_transformer(p: TextTransformerParams, shape: Shape, num_classes: int) -> list[Any]:
    """Embedding + learned positions → pre-norm encoder blocks → layer norm → pooling → dense."""
    block = {"transformer_encoder": {"heads": p.heads, "ff": p.ff, "dropout": p.dropout}}
    return [{"embedding": {"vocab_size": _vocab(p, "text_transformer"), "dim": p.dim, "padding_idx": 0}},
            "positional", {"dropout": p.dropout}, *[block] * p.layers, "layernorm", {"pool": p.pooling},
            {"dense": num_classes}]


class TextNgramParams(Params):
    dim: int = Field(64, ge=1, description="n-gram embedding width")
    buckets: int = Field(65_536, ge=2, le=2**24, description="hash table rows (65,536 x 64 floats: 16 MB)")
    min_n: int = Field(1, ge=1)
    max_n: int = Field(5, ge=1, le=8)
    boundary: bool = Field(True, description="a boundary symbol before and after each text")
    within_words: bool = Field(True, description="n-grams never span the separator (char_wb); false: across words")
    separator: int | None = Field(None, ge=0, description="the space's token id (default: the char tokenizer's)")
    hidden: int | None = Field(None, ge=1, description="a ReLU layer before the classes (fastText: none)")
    dropout: float = Field(0.0, ge=0, lt=1)


def text_ngram(p: TextNgramParams, shape: Shape, num_classes: int) -> list[Any]:
    """fastText: the mean of hashed character n-gram embeddings → (optionally a hidden layer) → dense."""
    bag = {"ngram_bag": {"dim": p.dim, "buckets": p.buckets, "min_n": p.min_n, "max_n": p.max_n,
                         "boundary": p.boundary, "separator": p.separator if p.within_words else None}}
    hidden = [{"dense": p.hidden}, "relu", {"dropout": p.dropout}] if p.hidden else []
    return [bag, {"dropout": p.dropout}, *hidden, {"dense": num_classes}]


def tiny_params(params: type[Params], **small: Any) -> type[Params]:
    """A preset's settings: the base model's, with smaller defaults (shown by `dlforge models`, overridable)."""
    fields: dict[str, Any] = {}
    for name, value in small.items():
        base = params.model_fields[name]
        fields[name] = (base.annotation, FieldInfo.merge_field_infos(base, default=value))
    return create_model(f"Tiny{params.__name__}", __base__=params, **fields)


def _register() -> None:
    add = MODELS.add
    resnet18, resnet34 = _resnet([2, 2, 2, 2]), _resnet([3, 4, 6, 3])
    add("cnn_small", Component(CnnParams, cnn, None, "conv-bn-relu stages and a dense head"))
    add("mlp", Component(MlpParams, mlp, None, "multi-layer perceptron"))
    add("resnet18", Component(ResNetParams, resnet18, None, "ResNet-18 (basic blocks 2-2-2-2)"))
    add("resnet34", Component(ResNetParams, resnet34, None, "ResNet-34 (basic blocks 3-4-6-3)"))
    add("rnn", Component(RnnParams, rnn, None, "LSTM/GRU classifier over sequences (optionally of tokens)"))
    add("cnn_tiny", Component(tiny_params(CnnParams, channels=[4], hidden=16), cnn, None, "cnn_small, 4 channels"))
    add("mlp_tiny", Component(tiny_params(MlpParams, hidden=[16]), mlp, None, "mlp with one hidden layer of 16"))
    add("resnet18_tiny", Component(tiny_params(ResNetParams, width=4), resnet18, None, "resnet18 at width 4"))
    add("resnet34_tiny", Component(tiny_params(ResNetParams, width=4), resnet34, None, "resnet34 at width 4"))
    add("rnn_tiny", Component(tiny_params(RnnParams, hidden=8, embedding_dim=8), rnn, None, "rnn with 8 hidden units"))
    add("text_rnn", Component(TextRnnParams, text_rnn, None, "text: embedding, bidirectional GRU/LSTM, pooling"))
    add("text_cnn", Component(TextCnnParams, text_cnn, None, "text: embedding, convolutions along the tokens, pooling"))
    add("text_transformer", Component(TextTransformerParams, text_transformer, None,
                                      "text: a small Transformer encoder with learned positions"))
    add("text_ngram", Component(TextNgramParams, text_ngram, None,
                                "text: fastText, the mean of hashed character n-gram embeddings"))
    add("text_rnn_tiny", Component(tiny_params(TextRnnParams, embedding_dim=8, hidden=8), text_rnn, None,
                                   "text_rnn with 8 hidden units"))
    add("text_cnn_tiny", Component(tiny_params(TextCnnParams, embedding_dim=8, channels=[8]), text_cnn, None,
                                   "text_cnn with one convolution of 8 channels"))
    add("text_ngram_tiny", Component(tiny_params(TextNgramParams, dim=8, buckets=1024, max_n=3), text_ngram, None,
                                     "text_ngram: 1-3-grams of width 8 in 1,024 buckets"))
    add("text_transformer_tiny", Component(tiny_params(TextTransformerParams, dim=16, heads=2, layers=1),
                                           text_transformer, None, "text_transformer: 1 block of width 16"))
    add("audio_cnn", Component(AudioCnnParams, audio_cnn, None, "audio: log-mel/MFCC front-end and a small CNN"))
    add("audio_cnn_tiny", Component(tiny_params(AudioCnnParams, channels=[4], n_mels=16, n_mfcc=8), audio_cnn, None,
                                    "audio_cnn with 4 channels and 16 mels"))


_register()


def arch_layers(name: str, params: dict[str, Any], shape: Shape, num_classes: int,
                facts: dict[str, Any] | None = None) -> list[ComponentSpec]:
    """Expand a named architecture into its layer list, validating `model.params`.

    `facts` from the data (e.g. the tokenizer's `vocab_size`) fill settings the user left unset."""
    try:
        component = MODELS.get(name)
    except RegistryError as exc:
        raise ConfigError([f"model.arch: {exc}"]) from None
    try:
        validated = component.params.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, component.params, prefix="model.params")) from None
    unset = {k: v for k, v in (facts or {}).items() if getattr(validated, k, False) is None and v is not None}
    return _spec(component.build(validated.model_copy(update=unset), shape, num_classes))
