"""How raw inputs become model inputs: the `preprocessing` section of run.json and manifest.json, typed.

A torch-free leaf (pydantic only). The data loaders build these models, `RunInfo` and the package
manifest hold them, and training, `dlforge predict` and the server read the same attributes. There is
one model per built-in `kind`, and `PluginPreprocessing` carries the kinds plugins define (their own
subclass types them); `Preprocessing` is the union, told apart by `kind`, and `parse_preprocessing` turns a
JSON object into one, with errors that name the key and the kind.

A model dumps exactly the keys it was built or read with (an optional fact left out stays out), so
run.json and manifest.json keep the shape earlier versions wrote, and their files still load.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from dlforge.errors import UserError

__all__ = ["BUILT_IN", "AudioPreprocessing", "GeneratorPreprocessing", "ImagePreprocessing", "PluginPreprocessing",
           "Preprocessing", "PreprocessingError", "TensorPreprocessing", "TextPreprocessing", "TokensPreprocessing",
           "TranslationPreprocessing", "describe_error", "parse_preprocessing"]


class PreprocessingError(UserError, ValueError):
    """A preprocessing section of no known kind, or one that misses or mistypes a key of its kind."""


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only `kind` and the keys given: a dump has the shape that was read or built."""
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if key == "kind" or key in self.model_fields_set}

    @classmethod
    def of(cls, prep: Preprocessing, needed_by: str = "this model") -> Self:
        """`prep` as this kind, which `needed_by` works with; PreprocessingError if it is another kind.

        A plugin's kind read from a file comes as a plain PluginPreprocessing: its subclass checks it here."""
        if isinstance(prep, cls):
            return prep
        wanted = cls.model_fields["kind"].default
        if prep.kind != wanted or not isinstance(prep, PluginPreprocessing):
            raise PreprocessingError(f"preprocessing.kind: {needed_by} needs kind '{wanted}', not '{prep.kind}'")
        try:
            return cls.model_validate(prep.model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PreprocessingError(_problem(cls, wanted, first["loc"], first, "preprocessing")) from None


MEAN = "train-split mean per channel (per feature for flat inputs); the model subtracts it itself"
STD = "train-split standard deviation per channel (per feature); the model divides by it itself"


class ImagePreprocessing(_Kind):
    """Image files decoded, converted and resized to float32 (C, H, W) in [0, 1]."""

    kind: Literal["image"] = "image"
    size: tuple[PositiveInt, PositiveInt] = Field(description="(height, width) every image is resized to")
    channels: Literal[1, 3] = Field(description="1 (grayscale) or 3 (RGB)")
    channel_order: Literal["L", "RGB"] = Field(description="the mode images are converted to: L (1 channel), RGB (3)")
    resize: Literal["stretch", "center_crop"] = Field(
        "stretch", description="stretch the whole image to size, or center_crop: the largest centred region of "
                               "size's aspect ratio, then resize")
    scale: float = Field(gt=0, description="model input per unit of the source's pixel values (1/255: 8-bit)")
    note: str | None = Field(None, description="how this dataset's values differ from 8-bit files, for people")
    mean: list[float] | None = Field(None, description=MEAN)
    std: list[float] | None = Field(None, description=STD)
    output_range: tuple[float, float] | None = Field(None, description="the range of output images (denoise)")

    @model_validator(mode="after")
    def _order_fits_channels(self) -> ImagePreprocessing:
        if (self.channel_order == "L") != (self.channels == 1):
            raise ValueError(f"channel_order {self.channel_order!r} does not fit channels {self.channels} "
                             "(L goes with 1, RGB with 3)")
        return self


class AudioPreprocessing(_Kind):
    """Audio clips decoded, mixed to mono, resampled and cropped or zero-padded to float32 waveforms."""

    kind: Literal["audio"] = "audio"
    sample_rate: PositiveInt = Field(description="Hz the model's waveforms are at")
    duration: float = Field(gt=0, description="seconds every clip is cropped or padded to")
    samples: PositiveInt = Field(description="sample_rate × duration, rounded: one waveform's length")
    channels: Literal[1] = Field(description="always 1: clips reach the model mono")
    mix_channels: bool = Field(True, description="false: multi-channel files are refused instead of averaged")
    resample: bool = Field(True, description="false: files at another rate are refused instead of resampled")
    dtype: str = Field(description="the waveform's sample type and range, for people: float32 in [-1, 1]")


class TextPreprocessing(_Kind):
    """Raw strings tokenized with the run's own tokenizer file into right-padded token ids."""

    kind: Literal["text"] = "text"
    tokenizer: str = Field(description="the tokenizer file of the run and the package (tokenizer.json)")
    tokenizer_kind: str = Field(description="how it splits text: char, word, bpe or wordpiece")
    vocab_size: PositiveInt = Field(description="token ids lie in [0, vocab_size); a package's is at most "
                                                "its embedding table's rows")
    max_length: PositiveInt = Field(description="longest text in tokens; longer ones are refused when served")
    lowercase: bool = Field(description="texts are lowercased before tokenizing")
    pad_id: int = Field(ge=0, description="the id that right-pads shorter texts (models mask it)")
    space_id: int | None = Field(None, description="the id of ' ' (char tokenizers; none: no such token)")


class TokensPreprocessing(_Kind):
    """Token ids given as they are (the synthetic dataset's)."""

    kind: Literal["tokens"] = "tokens"
    vocab_size: PositiveInt | None = Field(None, description="ids lie in [0, vocab_size) (none: unchecked)")


class TensorPreprocessing(_Kind):
    """Float tensors given as they are, scaled to [0, 1] by the dataset."""

    kind: Literal["tensor"] = "tensor"
    shape: list[PositiveInt] = Field(description="one sample's shape")
    mean: list[float] | None = Field(None, description=MEAN)
    std: list[float] | None = Field(None, description=STD)


class TranslationPreprocessing(_Kind):
    """Source sentences → source token ids; target token ids → sentences (seq2seq)."""

    kind: Literal["translation"] = "translation"
    source_tokenizer: str = Field(description="the source tokenizer file (source_tokenizer.json)")
    target_tokenizer: str = Field(description="the target tokenizer file (target_tokenizer.json)")
    pad_id: int = Field(ge=0, description="the id that right-pads both sides")
    bos_id: int = Field(ge=0, description="the target id that starts every translation")
    eos_id: int = Field(ge=0, description="the target id that ends it")
    source_vocab: PositiveInt = Field(description="source vocabulary size")
    target_vocab: PositiveInt = Field(description="target vocabulary size")
    max_source_tokens: PositiveInt = Field(description="longest source in tokens; longer ones are refused")
    max_target_tokens: PositiveInt = Field(description="longest target in tokens at training time")
    decoding: dict[str, int | float] = Field(description="eval.decode at training time (beam_size, "
                                                         "length_penalty, max_length: dlforge.decoding.SearchSettings)")
    target_tokenizer_sha256: str = Field(description="sha256 of the target tokenizer file (finds it while evaluating)")


class GeneratorPreprocessing(_Kind):
    """Seeds or latents [+ a class] → images (GAN generators)."""

    kind: Literal["generator"] = "generator"
    latent_dim: PositiveInt = Field(description="the length of one latent vector")
    image_shape: list[PositiveInt] = Field(description="(channels, height, width) of one generated image")
    output_range: tuple[float, float] = Field(description="the range of the generated pixel values, [0, 1]")
    conditional: bool = Field(description="the generator also takes a class index (the manifest's labels)")
    seed_to_latent: str = Field(description="how a seed becomes a latent, for people and other clients")


BUILT_IN: dict[str, type[_Kind]] = {m.model_fields["kind"].default: m for m in (
    ImagePreprocessing, AudioPreprocessing, TextPreprocessing, TokensPreprocessing, TensorPreprocessing,
    TranslationPreprocessing, GeneratorPreprocessing)}
PLUGIN = "plugin"  # the union's tag for every kind that is not built in


class PluginPreprocessing(_Kind):
    """A kind that a plugin's dataset or task defines: dlforge carries its keys as the plugin wrote them.

    The plugin types them with a subclass that names its kind, e.g. `class Tabular(PluginPreprocessing):
    kind: Literal["tabular"] = "tabular"; target_std: float`, writes that, and reads it back with
    `Tabular.of(info.preprocessing)` (run.json and manifests hold the keys; the subclass checks them)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = Field(description="the plugin's name for its kind (not a built-in one)",
                      json_schema_extra={"not": {"enum": list(BUILT_IN)}})

    @field_validator("kind")
    @classmethod
    def _not_built_in(cls, kind: str) -> str:
        if kind in BUILT_IN:
            raise ValueError(f"'{kind}' is a built-in kind; a plugin names its own (e.g. 'tabular')")
        return kind


def _tag(raw: Any) -> str | None:
    kind = raw.get("kind") if isinstance(raw, dict) else getattr(raw, "kind", None)
    if not isinstance(kind, str):
        return None
    return kind if kind in BUILT_IN else PLUGIN


Preprocessing = Annotated[
    Annotated[ImagePreprocessing, Tag("image")] | Annotated[AudioPreprocessing, Tag("audio")]
    | Annotated[TextPreprocessing, Tag("text")] | Annotated[TokensPreprocessing, Tag("tokens")]
    | Annotated[TensorPreprocessing, Tag("tensor")] | Annotated[TranslationPreprocessing, Tag("translation")]
    | Annotated[GeneratorPreprocessing, Tag("generator")] | Annotated[SerializeAsAny[PluginPreprocessing], Tag(PLUGIN)],
    Discriminator(_tag), Field(description="how raw inputs become model inputs, by kind")]
_ADAPTER: TypeAdapter[Preprocessing] = TypeAdapter(Preprocessing)


def parse_preprocessing(raw: Any, where: str = "preprocessing") -> Preprocessing:
    """The typed model of a preprocessing section (a dict from JSON, or a model already); PreprocessingError
    names the key and the kind, prefixed with `where` (e.g. "runs/x/run.json: preprocessing")."""
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise PreprocessingError(describe_error(exc.errors()[0], where)) from None


def describe_error(error: ErrorDetails, where: str = "preprocessing", start: int = 0) -> str:
    """One line for a validation error of `Preprocessing`; the section starts at `loc[start]` (1 in a manifest's
    errors, whose `loc` begins with "preprocessing")."""
    loc = error["loc"][start:]
    if loc and loc[0] in BUILT_IN:
        return _problem(BUILT_IN[str(loc[0])], str(loc[0]), loc[1:], error, where)
    if loc and loc[0] == PLUGIN:
        return _problem(PluginPreprocessing, PLUGIN, loc[1:], error, where)
    if isinstance(error["input"], dict | BaseModel):
        return (f"{where}.kind: missing or not a string — every preprocessing section names its kind "
                f"({', '.join(BUILT_IN)}, or a plugin's)")
    return f"{where}: {_shown(error['input'])} is not an object with a kind"


def _problem(model: type[_Kind], kind: str, path: tuple[int | str, ...], error: ErrorDetails, where: str) -> str:
    if not path:  # a check across keys
        return f"{where} (kind '{kind}'): {error['msg'].removeprefix('Value error, ')}"
    key, field = ".".join(map(str, path)), model.model_fields.get(str(path[0]))
    if error["type"] == "extra_forbidden":
        return f"{where}.{key}: not a key of kind '{kind}' (its keys: {', '.join(model.model_fields)})"
    about = field.description if field is not None else ""
    if error["type"] == "missing" and len(path) == 1:
        return f"{where}.{key}: missing — kind '{kind}' needs it ({about})"
    return f"{where}.{key}: {error['msg']}, got {_shown(error['input'])} (kind '{kind}': {about})"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
