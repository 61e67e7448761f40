"""`dlforge predict` on a classifier: files (images, audio clips, .npy, .txt) or strings → model inputs → top-k.

Images, audio clips and text become tensors through the package's serving codec — the same code as an
upload to the server, decoding like the training data; text goes through the package's own tokenizer.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.audio_io import AUDIO_SUFFIXES, reads_mp3
from dlforge.console import print_warning
from dlforge.data.datasets import IMAGE_SUFFIXES
from dlforge.export.errors import InputFileError, PackageError
from dlforge.export.inputs import InputRules, check_values
from dlforge.export.onnx import run_onnx, session
from dlforge.export.package import ModelPackage
from dlforge.preprocessing import TextPreprocessing
from dlforge.serve.tensors import ProtocolError, text_of
from dlforge.tasks.classification.codec import TensorCodec, TextCodec
from dlforge.text import unknown_warnings


@dataclass
class Prediction:
    source: str
    top: list[tuple[str, float]]  # (label, probability), best first


def _sample_rank(package: ModelPackage) -> int:
    return len(package.manifest.inputs[0].shape) - 1


def load_npy(path: Path, package: ModelPackage) -> np.ndarray:
    """One sample or a batch, raw [0, 1]-scaled floats or token ids (never unpickled)."""
    spec = package.manifest.inputs[0]
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # pickled object arrays land here too
        raise InputFileError(f"{path}: not a readable .npy array of numbers ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise InputFileError(f"{path}: holds {getattr(arr, 'dtype', type(arr).__name__)}, not numbers")
    if arr.ndim == _sample_rank(package):
        arr = arr[None]
    if arr.ndim != len(spec.shape) or any(d not in (-1, a) for d, a in zip(spec.shape[1:], arr.shape[1:], strict=True)):
        raise InputFileError(f"{path}: shape {list(arr.shape)} does not fit the model input {spec.shape} "
                             "(one sample without the batch axis, or a batch)")
    arr = arr.astype(np.int64 if spec.datatype == "INT64" else np.float32)
    check_values(str(path), arr, InputRules.from_preprocessing(package.manifest.preprocessing))
    return arr


def _codec(package: ModelPackage) -> TensorCodec | TextCodec:
    """The serving codec: files and strings become tensors here exactly as on the server."""
    text = isinstance(package.manifest.preprocessing, TextPreprocessing)
    return TextCodec(package) if text else TensorCodec(package.manifest)


TAKES = {"image": ("images", ".png/.jpg files or .npy arrays"),
         "audio": ("audio clips", ".wav/.flac/.ogg files or .npy arrays"),
         "text": ("text", ".txt files (one text each) or --text \"some text\"")}


def audio_suffixes() -> tuple[str, ...]:
    """Audio files `dlforge predict` reads: libsndfile's formats, MP3 where this machine's libsndfile has it."""
    return (*AUDIO_SUFFIXES, ".mp3") if reads_mp3() else AUDIO_SUFFIXES


def takes(package: ModelPackage) -> str:
    """What this model takes and how to pass it (`images: pass .png/.jpg files or .npy arrays`)."""
    kind = package.manifest.preprocessing.kind
    what, how = TAKES.get(kind, ("tensors", ".npy arrays of its input"))
    if kind == "audio" and ".mp3" in audio_suffixes():
        how = how.replace(".ogg", ".ogg/.mp3")
    return f"{what}: pass {how}"


def wrong_input(source: object, package: ModelPackage) -> InputFileError:
    """One `error:` line for an input this model does not take, naming what it takes."""
    return InputFileError(f"{source}: this model (task {package.manifest.task}) takes {takes(package)}")


def load_file(path: Path, package: ModelPackage, kind: str) -> np.ndarray:
    """An image or audio file decoded by the codec, like an upload to /classify and like training data."""
    if package.manifest.preprocessing.kind != kind:
        raise wrong_input(path, package)
    codec = _codec(package)
    try:
        return next(iter(codec.decode_upload(path).values()))
    except ProtocolError as exc:
        raise InputFileError(f"{path}: not a readable {'image' if kind == 'image' else 'audio clip'} ({exc})") from None


def tokenize(texts: list[str], sources: list[str], package: ModelPackage) -> np.ndarray:
    """Right-padded token ids of `texts` by the package's codec; texts it cannot take (empty, too long) are refused."""
    from dlforge.text import TokenizerError

    codec = _codec(package)
    if not isinstance(codec, TextCodec):
        raise wrong_input("--text" if any(s.startswith("--text") for s in sources) else sources[0], package)
    try:
        return codec.encode_texts(texts)
    except TokenizerError as exc:
        where = sources[exc.index] if exc.index is not None else "text"
        raise PackageError(f"{where}: {exc.reason}") from None


def read_text(path: Path, package: ModelPackage) -> str:
    """A .txt file under the server's text rule (UTF-8 without NUL: serve.tensors.text_of)."""
    if path.suffix.lower() != ".txt":
        raise wrong_input(path, package)
    try:
        return text_of(path.read_bytes(), str(path)).strip()
    except ProtocolError as exc:
        raise InputFileError(str(exc)) from None


def load_inputs(files: list[Path], package: ModelPackage) -> tuple[np.ndarray, list[str]]:
    """Stack every file's samples into one batch; returns it and a source name per sample."""
    arrays, sources = [], []
    for path in files:
        if not path.is_file():
            raise InputFileError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr = load_npy(path, package)
        elif suffix in IMAGE_SUFFIXES:
            arr = load_file(path, package, "image")
        elif suffix in audio_suffixes():
            arr = load_file(path, package, "audio")
        else:
            raise wrong_input(path, package)
        arrays.append(arr)
        sources += [str(path)] if len(arr) == 1 else [f"{path}[{i}]" for i in range(len(arr))]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise InputFileError(f"inputs have different shapes {sorted(shapes)}; predict them separately")
    return np.concatenate(arrays), sources


def probabilities(package: ModelPackage, x: np.ndarray, int8: bool = False) -> np.ndarray:
    path = package.int8_path if int8 else package.onnx_path
    if path is None:
        raise PackageError(f"{package.root}: not quantized; export with --quantize int8")
    return run_onnx(session(path), x)[1]


def predict_files(package: ModelPackage, files: list[Path], top_k: int = 3, int8: bool = False,
                  texts: list[str] | None = None) -> list[Prediction]:
    """Top-k (label, probability) for every sample in `files` (.txt: one text each) and every string in `texts`."""
    texts = texts or []
    if texts or isinstance(package.manifest.preprocessing, TextPreprocessing):
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise PackageError(f"{missing[0]}: no such file")
        if not isinstance(package.manifest.preprocessing, TextPreprocessing):
            raise wrong_input("--text", package)
        sources = [*map(str, files), *(f"--text {i + 1}" for i in range(len(texts)))]
        x = tokenize([read_text(p, package) for p in files] + texts, sources, package)
        for warning in unknown_warnings(x, sources):  # mostly [UNK]: a confident label about nothing
            print_warning(warning)
    else:
        x, sources = load_inputs(files, package)
    probs = probabilities(package, x, int8)
    labels = package.manifest.labels
    k = max(1, min(top_k, len(labels)))
    best = np.argsort(-probs, axis=1)[:, :k]
    return [Prediction(src, [(labels[j], float(p[j])) for j in idx]) for src, p, idx in zip(sources, probs, best,
                                                                                           strict=True)]
