"""Columns of text from CSV / TSV, JSON lines or Parquet files, read through pyarrow.

The reader is chosen by suffix (`.parquet`, `.jsonl`, else CSV with the delimiter given or sniffed). Any
encoding Python knows is read (a UTF-8 BOM, as Excel writes, is dropped). Texts stay in Arrow arrays
(`TextColumn`), never Python lists of every string: forked loader workers share them without copying, and
a file of millions of rows costs its bytes, not a Python object per row. pyarrow's own errors say little
about where a file is wrong, so when a read fails the file is scanned again in Python for the line at fault.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from pydantic import AfterValidator

from dlforge.data.errors import DataError

CHUNK = 65536  # strings converted to (or from) Arrow at a time
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
PARQUET = (".parquet", ".pq")
JSON_LINES = (".jsonl", ".ndjson")


def check_encoding(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}; e.g. utf-8, latin-1, cp1252, utf-16") from None
    return name


Encoding = Annotated[str, AfterValidator(check_encoding)]


class TextColumn(Sequence[str]):
    """Strings in a pyarrow ChunkedArray, read one (`[i]`), a batch (`at`) or a stream (`iter`) at a time."""

    def __init__(self, array: pa.ChunkedArray | pa.Array) -> None:
        self.array = array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array], pa.string())

    @classmethod
    def of(cls, texts: Iterable[str]) -> TextColumn:
        """From Python strings, CHUNK at a time (so a generator never becomes one big list)."""
        chunks, batch = [], []
        for text in texts:
            batch.append(text)
            if len(batch) == CHUNK:
                chunks.append(pa.array(batch, pa.string()))
                batch = []
        chunks.append(pa.array(batch, pa.string()))
        return cls(pa.chunked_array(chunks, pa.string()))

    def __len__(self) -> int:
        return len(self.array)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> TextColumn: ...
    def __getitem__(self, index: int | slice) -> str | TextColumn:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        return str(self.array[index].as_py())

    def at(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return self.array.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()  # type: ignore[no-any-return]

    def codes(self, values: list[str]) -> np.ndarray:
        """Each string's position in `values` (int64; every string must be one of them)."""
        return pc.index_in(self.array, value_set=pa.array(values, pa.string())).to_numpy().astype(np.int64)

    def take(self, indices: Sequence[int] | np.ndarray) -> TextColumn:
        return TextColumn(self.array.take(pa.array(np.asarray(indices, dtype=np.int64))))

    def iter(self, indices: Sequence[int] | np.ndarray | None = None) -> Iterator[str]:
        """The strings (at `indices`, in that order), CHUNK at a time: a stream, never one list of them all."""
        if indices is None:
            for chunk in self.array.chunks:
                for start in range(0, len(chunk), CHUNK):
                    yield from chunk.slice(start, CHUNK).to_pylist()
            return
        for start in range(0, len(indices), CHUNK):
            yield from self.at(indices[start:start + CHUNK])

    def __iter__(self) -> Iterator[str]:
        return self.iter()

    def stripped(self) -> TextColumn:
        """Without leading and trailing whitespace (the same characters as Python's str.strip)."""
        return TextColumn(pc.utf8_trim_whitespace(self.array))

    def non_blank(self) -> np.ndarray:
        """A boolean mask: the strings with something besides whitespace."""
        return pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(self.array)), 0).to_numpy(zero_copy_only=False)


# --- reading ---------------------------------------------------------------------------------------
Column = str | int  # a name (a header or field) or a 0-based position (a file without a header)


def need_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise DataError(f"data.params.path: {path} is not a file")
    return path


def read_columns(path: Path, columns: Mapping[str, Column], encoding: str = "utf-8", delimiter: str | None = None,
                 quoting: bool = True, otherwise: Literal["csv", "jsonl"] = "csv") -> dict[str, TextColumn]:
    """The `columns` (param key → column) of the table at `path` as strings; DataError names key or line.

    By suffix: Parquet, JSON lines (names are fields), else `otherwise`: CSV/TSV (`delimiter`, or sniffed
    from the first lines; names read a header row, positions a file without one; `quoting`: '"' quotes
    fields) or JSON lines."""
    path = need_file(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        return _read_parquet(path, columns)
    if suffix in JSON_LINES or otherwise == "jsonl":
        return _read_json_lines(path, columns, encoding)
    return _read_csv(path, columns, encoding, delimiter, quoting)


def _missing(key: str, column: Column, path: Path, names: list[str], hint: str = "") -> DataError:
    if isinstance(column, int):
        return DataError(f"data.params.{key}: column {column} is past the {len(names)} column(s) of {path}{hint}")
    return DataError(f"data.params.{key}: no column '{column}' in {path} (columns: {', '.join(names)}){hint}")


def _as_strings(table: pa.Table, names: dict[str, str], path: Path) -> dict[str, TextColumn]:
    out = {}
    for key, name in names.items():
        column = table.column(name)
        try:
            column = column.cast(pa.string()) if column.type != pa.string() else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"data.params.{key}: column '{name}' of {path} is {column.type}, not text "
                            f"({exc})") from None
        out[key] = TextColumn(pc.fill_null(column, "") if column.null_count else column)  # as an empty CSV cell
    return out


# --- Parquet ---------------------------------------------------------------------------------------
def _read_parquet(path: Path, columns: Mapping[str, Column]) -> dict[str, TextColumn]:
    import pyarrow.parquet as pq

    try:
        names = list(pq.read_schema(path).names)
        wanted = _resolve(columns, names, path)
        table = pq.read_table(path, columns=sorted(set(wanted.values())))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"data.params.path: {path} is not a Parquet file we can read ({exc})") from None
    return _as_strings(table, wanted, path)


def _resolve(columns: Mapping[str, Column], names: list[str], path: Path, hint: str = "") -> dict[str, str]:
    """param key → column name, from names or positions."""
    out = {}
    for key, column in columns.items():
        if isinstance(column, int) and column < len(names):
            out[key] = names[column]
        elif isinstance(column, str) and column in names:
            out[key] = column
        else:
            raise _missing(key, column, path, names, hint)
    return out


# --- CSV / TSV -------------------------------------------------------------------------------------
def python_codec(encoding: str) -> str:
    """The codec Python reads `encoding` with: UTF-8 drops a BOM as pyarrow does."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _first_lines(path: Path, encoding: str) -> str:
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    text = head.decode(python_codec(encoding), errors="replace")
    return text if len(head) < SNIFF_BYTES else text[: text.rfind("\n") + 1] or text


def _header(sample: str, delimiter: str, quoting: bool) -> list[str]:
    quotes = {} if quoting else {"quoting": csv.QUOTE_NONE}
    return next(csv.reader(io.StringIO(sample), delimiter=delimiter, **quotes), [])  # type: ignore[arg-type]


def sniff_delimiter(sample: str, names: list[str], default: str) -> str:
    """csv.Sniffer's guess among , ; TAB | — unless another of them makes a header holding every name in `names`."""
    try:
        guess = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        guess = default
    for candidate in [guess, *(d for d in DELIMITERS if d != guess)]:
        if names and set(names) <= set(_header(sample, candidate, True)):
            return candidate
    return guess


def _read_csv(path: Path, columns: Mapping[str, Column], encoding: str, delimiter: str | None,
              quoting: bool) -> dict[str, TextColumn]:
    """pyarrow's reader; Python's csv module when pyarrow cannot (a row wider or narrower than the first), which
    keeps ragged files readable (extra fields are ignored) and names the line of a row too short."""
    sample = _first_lines(path, encoding)
    names = [c for c in columns.values() if isinstance(c, str)]
    given = delimiter is not None
    delimiter = delimiter or sniff_delimiter(sample, names, "\t" if path.suffix.lower() == ".tsv" else ",")
    first = _header(sample, delimiter, quoting)
    if names:  # a header row
        found = first
        hint = "" if given else f"; read with the sniffed delimiter {delimiter!r}: set data.params.delimiter if wrong"
    else:
        found, hint = [f"f{i}" for i in range(len(first))], f" (split at {delimiter!r})"
    wanted = _resolve(columns, found, path, hint)
    read = pa_csv.ReadOptions(encoding=_arrow_codec(encoding), column_names=found, skip_rows=1 if names else 0)
    parse = pa_csv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False, newlines_in_values=quoting,
                                invalid_row_handler=_skip_blank)
    convert = pa_csv.ConvertOptions(include_columns=sorted(set(wanted.values())),
                                    column_types=dict.fromkeys(wanted.values(), pa.string()))
    try:
        table = pa_csv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        if problem := undecodable(path, encoding):
            raise problem from None
        positions = {key: found.index(name) for key, name in wanted.items()}
        return _csv_in_python(path, positions, encoding, delimiter, quoting, bool(names))
    return _as_strings(table, wanted, path)


def _arrow_codec(encoding: str) -> str:
    return "utf8" if codecs.lookup(encoding).name == "utf-8" else encoding  # pyarrow's own UTF-8 path is fastest


def _skip_blank(row: Any) -> str:
    """pyarrow's handler of a row with the wrong number of fields: a blank line is skipped, others fail."""
    return "skip" if not (row.text or "").strip() else "error"


def _csv_in_python(path: Path, positions: dict[str, int], encoding: str, delimiter: str, quoting: bool,
                   header: bool) -> dict[str, TextColumn]:
    need = max(positions.values()) + 1
    out = _Columns(list(positions))
    quotes = {} if quoting else {"quoting": csv.QUOTE_NONE}
    with path.open(newline="", encoding=python_codec(encoding)) as fh:
        reader = csv.reader(fh, delimiter=delimiter, **quotes)  # type: ignore[arg-type]
        if header:
            next(reader, None)
        for row in reader:
            if len(row) < need:
                if not any(field.strip() for field in row):
                    continue
                raise DataError(f"data.params.path: {path} line {reader.line_num} has {len(row)} field(s) split at "
                                f"{delimiter!r}, need {need}; fix the line or set data.params.delimiter")
            out.add([row[i] for i in positions.values()])
    return out.columns()


class _Columns:
    """Strings per key from rows read in Python, turned into Arrow CHUNK rows at a time."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.rows: list[list[str]] = []
        self.chunks: list[list[pa.Array]] = [[] for _ in keys]

    def add(self, values: list[str]) -> None:
        self.rows.append(values)
        if len(self.rows) == CHUNK:
            self._flush()

    def _flush(self) -> None:
        for i, chunks in enumerate(self.chunks):
            chunks.append(pa.array([row[i] for row in self.rows], pa.string()))
        self.rows = []

    def columns(self) -> dict[str, TextColumn]:
        self._flush()
        return {key: TextColumn(pa.chunked_array(chunks, pa.string())) for key, chunks in zip(self.keys, self.chunks,
                                                                                                strict=True)}


def undecodable(path: Path, encoding: str) -> DataError | None:
    """The first bytes of `path` that `encoding` cannot decode, as a DataError naming line and column; None if none."""
    decoder = codecs.getincrementaldecoder(python_codec(encoding))()
    number = 1
    with path.open("rb") as fh:
        for raw in fh:
            try:
                number += decoder.decode(raw).count("\n")
            except UnicodeDecodeError as exc:
                before = exc.object[: exc.start].decode(python_codec(encoding), errors="replace")
                column = len(before) - before.rfind("\n")
                return DataError(f"data.params.path: {path} line {number} is not {encoding} (byte "
                                 f"0x{exc.object[exc.start]:02x} at column {column}); set data.params.encoding "
                                 "(e.g. latin-1)")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return DataError(f"data.params.path: {path} ends inside a character (line {number}) — not {encoding}; "
                         "set data.params.encoding (e.g. latin-1)")
    return None


# --- JSON lines ------------------------------------------------------------------------------------
def _read_json_lines(path: Path, columns: Mapping[str, Column], encoding: str) -> dict[str, TextColumn]:
    """pyarrow's reader when the fields come back as text or integers; else line by line in Python (any
    encoding, any JSON value as str() of it), which also names the line of a mistake."""
    fields = {key: str(column) for key, column in columns.items()}
    if codecs.lookup(encoding).name == "utf-8":
        import pyarrow.json as pa_json

        try:
            table = pa_json.read_json(path)
            table.validate(full=True)  # the JSON reader lets bytes that are not UTF-8 through
        except pa.ArrowInvalid:
            table = None
        if table is not None and all(_plain(table, f) for f in fields.values()):
            return _as_strings(table, fields, path)
    return _json_lines_in_python(path, fields, encoding)


def _plain(table: pa.Table, field: str) -> bool:
    """A field every row has, as text or an integer (whose text is what Python's str() gives)."""
    if field not in table.column_names or table.column(field).null_count:
        return False
    kind = table.column(field).type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind))


def _json_lines_in_python(path: Path, fields: dict[str, str], encoding: str) -> dict[str, TextColumn]:
    out = _Columns(list(fields))
    keys = " / ".join(fields)
    decoder = codecs.getincrementaldecoder(python_codec(encoding))()
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError:
                raise undecodable(path, encoding) or DataError(f"{path}:{number}: not {encoding}") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            missing = [f for f in fields.values() if not isinstance(row, dict) or f not in row]
            if missing:
                raise DataError(f"{path}:{number}: no field {missing[0]!r} (set data.params.{keys} to the names "
                                "your file uses)")
            out.add([str(row[f]) for f in fields.values()])
    return out.columns()
