"""One tensor on the V2 wire: the datatype table and the codecs between numpy and JSON or bytes.

Shared by requests and responses (see protocol.py). Every client mistake raises `ProtocolError`,
which the app maps to HTTP 400 with `{"error": message}`; messages name the tensor at fault.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlforge.errors import UserError
from dlforge.registry import suggest

MAX_ELEMENTS = 1 << 27  # 134M elements (0.5 GiB of FP32): larger shapes are rejected as absurd.
MAX_NDIM = 32
_U32 = struct.Struct("<I")


class ProtocolError(UserError, ValueError):
    """A request that does not follow the protocol; the message names the field at fault."""


# --- datatypes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Datatype:
    """One V2 datatype: the numpy dtype it decodes to and its size on the wire (0 = variable)."""

    name: str
    dtype: np.dtype
    size: int
    json_kinds: str  # numpy kinds accepted from JSON data; '' = binary only

    @property
    def wire(self) -> np.dtype:
        return self.dtype.newbyteorder("<")


def _dt(name: str, dtype: Any, size: int, kinds: str) -> Datatype:
    return Datatype(name, np.dtype(dtype), size, kinds)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", np.bool_, 1, "b"),
        _dt("UINT8", np.uint8, 1, "iu"),
        _dt("UINT16", np.uint16, 2, "iu"),
        _dt("UINT32", np.uint32, 4, "iu"),
        _dt("UINT64", np.uint64, 8, "iu"),
        _dt("INT8", np.int8, 1, "iu"),
        _dt("INT16", np.int16, 2, "iu"),
        _dt("INT32", np.int32, 4, "iu"),
        _dt("INT64", np.int64, 8, "iu"),
        _dt("FP16", np.float16, 2, ""),
        _dt("FP32", np.float32, 4, "iuf"),
        _dt("FP64", np.float64, 8, "iuf"),
        _dt("BF16", np.float32, 2, ""),  # numpy has no bfloat16: decoded to float32
        _dt("BYTES", object, 0, "U"),
    )
}
_KIND_WORDS = {"b": "booleans", "iu": "integers", "iuf": "numbers", "U": "strings"}


def get_datatype(name: str, what: str = "tensor") -> Datatype:
    try:
        return DATATYPES[name]
    except KeyError:
        known = list(DATATYPES)
        raise ProtocolError(
            f"{what}: unknown datatype '{name}'{suggest(name, known)} (known: {', '.join(known)})"
        ) from None


_NAME_OF_DTYPE: dict[np.dtype, str] = {d.dtype: d.name for d in DATATYPES.values() if d.name != "BF16"}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name for a numpy array (str/bytes/object arrays are BYTES)."""
    if (known := _NAME_OF_DTYPE.get(array.dtype)) is not None:  # every response asks: one dict lookup
        return known
    if array.dtype.kind in "OSU":
        return "BYTES"
    if array.dtype.name == "bfloat16":  # e.g. ml_dtypes arrays
        return "BF16"
    for d in DATATYPES.values():
        if d.dtype == array.dtype and d.name != "BF16":
            return d.name
    # A model returning e.g. complex numbers is a server bug, not a bad request: not ProtocolError.
    raise TypeError(f"numpy dtype {array.dtype} has no V2 datatype")


# --- decoding ---------------------------------------------------------------------------------


def check_shape(what: str, shape: list[int], max_elements: int = MAX_ELEMENTS) -> int:
    """Element count of `shape`; negative or absurd shapes are rejected before any allocation."""
    if len(shape) > MAX_NDIM:
        raise ProtocolError(
            f"{what}: shape has {len(shape)} dimensions, at most {MAX_NDIM} allowed"
        )
    if any(d < 0 for d in shape):
        raise ProtocolError(f"{what}: shape {shape} has a negative dimension")
    count = math.prod(shape)
    if count > max_elements or any(d > max_elements for d in shape):
        raise ProtocolError(f"{what}: shape {shape} is too large (limit {max_elements} elements)")
    return count


def decode_tensor(
    what: str,
    datatype: str,
    shape: list[int],
    data: list[Any] | None,
    binary: bytes | memoryview | None,
    max_elements: int = MAX_ELEMENTS,
) -> np.ndarray:
    """One tensor from JSON `data` (flat or nested, row-major) or a binary blob, shaped `shape`."""
    dt = get_datatype(datatype, what)
    count = check_shape(what, shape, max_elements)
    if binary is not None and data is not None:
        raise ProtocolError(f"{what}: has both 'data' and parameters.binary_data_size")
    if binary is not None:
        flat = _from_binary(what, dt, count, binary)
    elif data is not None:
        flat = _from_json(what, dt, count, data)
    else:
        raise ProtocolError(f"{what}: has no 'data' (nor parameters.binary_data_size)")
    return flat.reshape(shape)


def _from_binary(what: str, dt: Datatype, count: int, blob: bytes | memoryview) -> np.ndarray:
    if dt.name == "BYTES":
        return _bytes_from_binary(what, count, blob)
    if len(blob) != count * dt.size:
        raise ProtocolError(
            f"{what}: binary data is {len(blob)} bytes but {count} {dt.name} elements "
            f"need {count * dt.size}"
        )
    if dt.name == "BF16":  # bfloat16 is the top half of a float32
        return (np.frombuffer(blob, "<u2").astype(np.uint32) << 16).view(np.float32)
    flat = np.frombuffer(blob, dt.wire).astype(dt.dtype)  # a writable, native-order copy
    if dt.name == "BOOL" and count and flat.view(np.uint8).max() > 1:
        raise ProtocolError(f"{what}: BOOL binary data must be bytes 0 or 1")
    return flat


def _bytes_from_binary(what: str, count: int, blob: bytes | memoryview) -> np.ndarray:
    if len(blob) < 4 * count:  # every element has a 4-byte length: check before allocating
        raise ProtocolError(f"{what}: {len(blob)} bytes cannot hold {count} BYTES elements")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        start = pos + 4  # a 4-byte little-endian length, then the element's bytes
        if start > len(blob) or (end := start + _U32.unpack_from(blob, pos)[0]) > len(blob):
            raise ProtocolError(f"{what}: BYTES binary data ends inside element {i} of {count}")
        out[i] = bytes(blob[start:end])
        pos = end
    if pos != len(blob):
        raise ProtocolError(f"{what}: {len(blob) - pos} bytes left after {count} BYTES elements")
    return out


def _from_json(what: str, dt: Datatype, count: int, data: list[Any]) -> np.ndarray:
    if not dt.json_kinds:
        raise ProtocolError(
            f"{what}: {dt.name} has no JSON form; send it as binary data "
            "(parameters.binary_data_size with the Inference-Header-Content-Length header)"
        )
    if dt.name == "BYTES":
        flat: list[bytes] = []
        _flatten_strings(what, data, flat, 0)
        _check_count(what, count, len(flat))
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out
    try:
        raw = np.asarray(data)
    except ValueError:
        raise ProtocolError(f"{what}: nested data is ragged (rows of different lengths)") from None
    _check_count(what, count, raw.size)
    if raw.size == 0:
        return np.empty(0, dt.dtype)
    if dt.dtype.kind in "iu" and raw.dtype.kind in "fO":  # big ints that numpy made float/object
        raw = _exact_ints(what, dt, data)
    if raw.dtype.kind not in dt.json_kinds:
        raise ProtocolError(f"{what}: {dt.name} data must be {_KIND_WORDS[dt.json_kinds]}")
    if dt.dtype.kind in "iu":
        info = np.iinfo(dt.dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise ProtocolError(f"{what}: value out of range for {dt.name}")
    return raw.astype(dt.dtype).reshape(-1)


def _exact_ints(what: str, dt: Datatype, data: list[Any]) -> np.ndarray:
    """Integers without a float detour: numpy infers float64 for [1, 2**63], losing digits."""
    items = np.asarray(data, dtype=object).reshape(-1).tolist()
    if not all(type(v) is int for v in items):
        raise ProtocolError(f"{what}: {dt.name} data must be integers")
    try:
        return np.array(items, dtype=dt.dtype)
    except OverflowError:
        raise ProtocolError(f"{what}: value out of range for {dt.name}") from None


def _flatten_strings(what: str, data: list[Any], out: list[bytes], depth: int) -> None:
    for item in data:
        if isinstance(item, str):
            out.append(item.encode())
        elif isinstance(item, list) and depth < MAX_NDIM:
            _flatten_strings(what, item, out, depth + 1)
        else:
            raise ProtocolError(f"{what}: BYTES data must be strings, got {json_type(item)}")


def _check_count(what: str, expected: int, got: int) -> None:
    if expected != got:
        raise ProtocolError(f"{what}: shape needs {expected} elements but data has {got}")


# --- encoding ---------------------------------------------------------------------------------


def encode_binary(array: np.ndarray, datatype: str) -> bytes:
    """Little-endian, row-major bytes; BYTES elements as a 4-byte length plus the bytes."""
    if datatype == "BYTES":
        items = [_as_bytes(v) for v in array.reshape(-1).tolist()]
        return b"".join(_U32.pack(len(b)) + b for b in items)
    if datatype == "BF16":
        return np.ascontiguousarray(array).view("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_json(what: str, array: np.ndarray, datatype: str) -> list[Any]:
    """Flat row-major JSON data; FP16/BF16 and non-UTF-8 BYTES have no JSON form."""
    if not DATATYPES[datatype].json_kinds:
        raise ProtocolError(
            f"{what} is {datatype}, which has no JSON form; "
            "request it with parameters.binary_data=true"
        )
    flat = array.reshape(-1).tolist()
    if datatype != "BYTES":
        return flat
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
    except UnicodeDecodeError:
        raise ProtocolError(
            f"{what} holds bytes that are not UTF-8 text; "
            "request it with parameters.binary_data=true"
        ) from None


def json_type(value: Any) -> str:
    """A JSON value's kind as a client knows it (object, array, string, …), never a Python class name."""
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "an array"),
             (dict, "an object"))
    return "null" if value is None else next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def text_of(raw: bytes, what: str) -> str:
    """One text under the rule every text input follows (V2 BYTES over HTTP and gRPC, /classify's text field,
    `dlforge predict`'s .txt files): UTF-8 with no NUL byte. ProtocolError (400) names `what` and the byte.

    NUL is refused because no text holds it: it means binary data or UTF-16 sent as text, which a tokenizer
    would silently turn into unknown tokens and a confident label."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 text") \
            from None
    if "\0" in text:
        raise ProtocolError(f"{what} holds a NUL byte at byte {raw.index(0)}; text is UTF-8 without NUL "
                            "(binary data or UTF-16 is not text)")
    return text


def utf8_texts(array: np.ndarray, name: str = "text") -> list[str]:
    """The strings of a BYTES tensor (rule: text_of); ProtocolError (400) names the first bad element."""
    return [text_of(item if isinstance(item, bytes) else str(item).encode(), f"input '{name}': element {i}")
            for i, item in enumerate(array.reshape(-1).tolist())]
