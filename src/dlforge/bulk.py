"""`dlforge predict PACKAGE --input FILE|DIR --output OUT`: many inputs through the serving path, streamed.

Inputs are read a batch at a time — rows of a table (CSV / TSV / JSON lines / Parquet, through pyarrow) for
text and translation models, files of a folder (sorted, recursively) for image and audio models — decoded by
the package's own serving codec, run by the same runtime `dlforge serve` loads (ONNX Runtime, or the task's
engine: seq2seq's search) and written out as they come: one output row per input, in input order, with a
progress bar. An input that cannot be read (a corrupt image, an empty text) gets its `error` in its row;
the others go on. Torch is never imported.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dlforge.errors import UserError
from dlforge.export.package import ModelPackage
from dlforge.serve.protocol import ProtocolError
from dlforge.taskapi import Codec, get_codec
from dlforge.text import TokenizerError

TABLES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".parquet", ".pq")
BATCH = 64


class BulkError(UserError):
    """The input or output of a bulk prediction cannot be used as given."""


@dataclass
class Row:
    """One input's place in the output: its id (row number or relative path) and what came of it."""

    source: str
    error: str | None = None


def text_column(path: Path, column: str | None) -> Any:
    """The table's text column as Arrow strings (a TextColumn: its bytes, not a Python object per row)."""
    from dlforge.data.errors import DataError
    from dlforge.data.tables import read_columns

    try:
        return read_columns(path, {"text": column or "text"})["text"]
    except DataError as exc:
        hint = "" if column else " (name the text column with --column)"
        raise BulkError(f"--input {path}: {str(exc).removeprefix('data.params.')}{hint}") from None


def text_batches(texts: Any, batch: int) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, texts), `batch` rows at a time (ids: 1-based data row numbers)."""
    for start in range(0, len(texts), batch):
        chunk = texts.at(np.arange(start, min(start + batch, len(texts))))
        yield [str(start + i + 1) for i in range(len(chunk))], chunk


def file_batches(folder: Path, suffixes: tuple[str, ...], batch: int) -> Iterator[list[Path]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise BulkError(f"--input {folder}: no {'/'.join(suffixes)} files in it (or its subfolders)")
    for start in range(0, len(files), batch):
        yield files[start:start + batch]


def decode_texts(codec: Codec, ids: list[str], texts: list[str]) -> tuple[list[Row], dict[str, np.ndarray] | None]:
    """The batch's graph inputs; texts the model cannot take are dropped from it with their reason."""
    rows = [Row(i) for i in ids]
    try:
        return rows, codec.decode_texts(texts)
    except ProtocolError:  # name each text that fails, decode the others
        for row, text in zip(rows, texts, strict=True):
            try:
                codec.decode_texts([text])
            except (ProtocolError, TokenizerError) as exc:
                row.error = str(exc).replace("input 'text': ", "")
        kept = [text for row, text in zip(rows, texts, strict=True) if row.error is None]
        return rows, codec.decode_texts(kept) if kept else None


def decode_files(codec: Codec, root: Path, files: list[Path]) -> tuple[list[Row], dict[str, np.ndarray] | None]:
    rows, graphs = [], []
    for path in files:
        row = Row(str(path.relative_to(root)))
        try:
            graphs.append(codec.decode_upload(path))
        except (ProtocolError, UserError, OSError) as exc:
            row.error = str(exc)
        rows.append(row)
    if not graphs:
        return rows, None
    return rows, {name: np.concatenate([g[name] for g in graphs]) for name in graphs[0]}


class Writer:
    """CSV or JSON lines, by the output's suffix; one line per input, written as each batch finishes."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        if path.suffix.lower() not in (".csv", ".jsonl"):
            raise BulkError(f"--output {path}: write .csv or .jsonl")
        if path.exists():
            raise BulkError(f"--output {path} exists; choose a new file (nothing was overwritten)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle: TextIO = path.open("w", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.handle, fieldnames=columns) if path.suffix.lower() == ".csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self.csv:
            self.csv.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in record.items()})
        else:
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.handle.close()


def records(package: ModelPackage, codec: Codec, rows: list[Row], outputs: dict[str, np.ndarray] | None,
            top_k: int) -> Iterator[dict[str, Any]]:
    """Output records of one batch, in input order (rows with an error carry only it)."""
    answered = iter(range(len(next(iter(outputs.values()))))) if outputs else iter(())
    labels = package.manifest.labels
    for row in rows:
        if row.error is not None:
            yield {"input": row.source, "error": row.error}
            continue
        i = next(answered)
        assert outputs is not None
        if not codec.ranks_labels:  # text out (a translation): each BYTES output as a string
            yield {"input": row.source, **{t.name: outputs[t.name][i].decode() for t in codec.outputs}, "error": None}
            continue
        probs = outputs["probabilities"][i]
        best = np.argsort(-probs)[:top_k]
        yield {"input": row.source, "label": labels[int(best[0])], "probability": round(float(probs[best[0]]), 6),
               "top": {labels[int(j)]: round(float(probs[j]), 6) for j in best}, "error": None}


def predict_bulk(package: ModelPackage, source: Path, output: Path, column: str | None = None, top_k: int = 3,
                 batch: int = BATCH, progress: bool = True) -> tuple[int, int]:
    """Predict every input of `source` into `output`; returns (inputs, inputs with an error)."""
    from dlforge.preprocessing import AudioPreprocessing, ImagePreprocessing
    from dlforge.serve.runtime import load_runtime

    task, prep = package.manifest.task, package.manifest.preprocessing
    if not source.exists():
        raise BulkError(f"--input {source}: no such file or folder")
    codec = get_codec(package)
    text_out = all(t.datatype == "BYTES" for t in codec.outputs)  # e.g. translations
    image_out = isinstance(prep, ImagePreprocessing) and [t.shape for t in codec.outputs] == [t.shape for t in
                                                                                             codec.inputs]
    if image_out and not codec.ranks_labels:  # image → image (a denoiser): a folder in, a folder of PNGs out
        return _images_to_images(codec, package, source, output, batch, progress)
    if not (codec.ranks_labels or text_out):
        raise BulkError(f"--input: bulk prediction takes models that answer labels or text; this is a {task} "
                        "package (use dlforge predict PACKAGE FILES…, or the task's own command)")
    if any(t.datatype == "BYTES" for t in codec.inputs):
        if not source.is_file() or source.suffix.lower() not in TABLES:
            raise BulkError(f"--input {source}: this model (task {task}) takes text: give a table "
                            f"({', '.join(TABLES)}) with a text column")
        texts = text_column(source, column)
        total = len(texts)
        batches: Iterator[tuple[list[Row], dict[str, np.ndarray] | None]] = (
            decode_texts(codec, ids, chunk) for ids, chunk in text_batches(texts, batch))
        columns = ["input", *(t.name for t in codec.outputs), "error"] if text_out else \
            ["input", "label", "probability", "top", "error"]
    elif isinstance(prep, ImagePreprocessing | AudioPreprocessing):
        if not source.is_dir():
            kind = "images" if isinstance(prep, ImagePreprocessing) else "audio clips"
            raise BulkError(f"--input {source}: this model (task {task}) takes {kind}: give a folder of them")
        suffixes = _file_suffixes(prep)
        files = list(file_batches(source, suffixes, batch))
        total = sum(len(f) for f in files)
        batches = (decode_files(codec, source, chunk) for chunk in files)
        columns = ["input", "label", "probability", "top", "error"]
    else:
        raise BulkError(f"--input: this {task} package takes raw tensors; predict .npy files with dlforge predict "
                        "PACKAGE FILES…")
    runtime = load_runtime("onnx", package, threads=0)
    writer, seen, failed = Writer(output, columns), 0, 0
    try:
        with _bar(progress, total) as (bar, job):
            for rows, graph in batches:
                outputs = codec.encode(runtime.infer(graph)) if graph is not None else None
                for record in records(package, codec, rows, outputs, top_k):
                    writer.write(record)
                    failed += record["error"] is not None
                seen += len(rows)
                bar.update(job, advance=len(rows))
    finally:
        writer.close()
    return seen, failed


@contextlib.contextmanager
def _bar(progress: bool, total: int) -> Iterator[tuple[Any, Any]]:
    """A rich progress bar on a terminal (nothing otherwise): (progress, its task) to advance."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress, transient=True) as bar:
        yield bar, bar.add_task("predict", total=total)


def _images_to_images(codec: Codec, package: ModelPackage, source: Path, output: Path, batch: int,
                      progress: bool) -> tuple[int, int]:
    """Each image of `source` through the model into `output`/<same relative path>.png."""
    from dlforge.imagegrid import save_image
    from dlforge.serve.runtime import load_runtime

    if not source.is_dir():
        raise BulkError(f"--input {source}: this model ({package.manifest.task}) takes images: give a folder of them")
    if output.suffix or (output.exists() and any(output.iterdir())):
        raise BulkError(f"--output {output}: this model writes images; give a new or empty folder")
    runtime, name = load_runtime("onnx", package, threads=0), codec.outputs[0].name
    chunks = list(file_batches(source, _file_suffixes(package.manifest.preprocessing), batch))
    seen, failed, errors = 0, 0, []
    with _bar(progress, sum(len(c) for c in chunks)) as (bar, job):
        for files in chunks:
            rows, graph = decode_files(codec, source, files)
            images = iter(codec.encode(runtime.infer(graph))[name]) if graph is not None else iter(())
            for row in rows:
                if row.error is None:
                    target = (output / row.source).with_suffix(".png")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    save_image(next(images), target)
                else:
                    errors.append(f"{row.source}: {row.error}")
            seen, failed = seen + len(rows), failed + sum(r.error is not None for r in rows)
            bar.update(job, advance=len(rows))
    if errors:
        (output / "errors.txt").write_text("\n".join(errors) + "\n")
    return seen, failed


def _file_suffixes(prep: Any) -> tuple[str, ...]:
    from dlforge.audio_io import AUDIO_SUFFIXES, reads_mp3
    from dlforge.data.datasets import IMAGE_SUFFIXES
    from dlforge.preprocessing import ImagePreprocessing

    if isinstance(prep, ImagePreprocessing):
        return tuple(IMAGE_SUFFIXES)
    return (*AUDIO_SUFFIXES, ".mp3") if reads_mp3() else tuple(AUDIO_SUFFIXES)

