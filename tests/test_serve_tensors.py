"""One tensor on the V2 wire: the datatype table, JSON and binary codecs, and their refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dlforge.serve.tensors import (
    DATATYPES,
    ProtocolError,
    check_shape,
    datatype_of,
    decode_tensor,
    encode_binary,
    encode_json,
)

SAMPLES = {
    "BOOL": [[True, False, True], [False, False, True]],
    "UINT8": [[0, 1, 255], [7, 8, 9]],
    "UINT16": [[0, 1, 65535], [7, 8, 9]],
    "UINT32": [[0, 1, 2**32 - 1], [7, 8, 9]],
    "UINT64": [[0, 1, 2**64 - 1], [7, 2**63, 9]],
    "INT8": [[-128, 1, 127], [7, -8, 9]],
    "INT16": [[-(2**15), 1, 2**15 - 1], [7, -8, 9]],
    "INT32": [[-(2**31), 1, 2**31 - 1], [7, -8, 9]],
    "INT64": [[-(2**63), 1, 2**63 - 1], [7, -8, 9]],
    "FP32": [[0.5, -1.25, 3], [1e10, -0.0, 2.75]],
    "FP64": [[0.1, -1.25, 3], [1e300, -0.0, 2.75]],
    "BYTES": [["a", "", "héllo"], ["x", "yz", "tokens"]],
}


def decode(datatype: str, shape: list[int], data=None, binary=None) -> np.ndarray:
    return decode_tensor("input 'x'", datatype, shape, data, binary)


def expected(datatype: str, nested: list) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[s.encode() for s in row] for row in nested], dtype=object)
    return np.array(nested, dtype=DATATYPES[datatype].dtype)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_json_round_trip(datatype: str, layout: str) -> None:
    nested = SAMPLES[datatype]
    data = [v for row in nested for v in row] if layout == "flat" else nested
    array = decode(datatype, [2, 3], data)
    want = expected(datatype, nested)
    assert array.shape == (2, 3)
    assert array.dtype == want.dtype
    assert array.tolist() == want.tolist()
    assert array.flags.writeable
    assert datatype_of(array) == datatype
    assert encode_json("output 'y'", array, datatype) == [v for row in nested for v in row]


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_binary_round_trip(datatype: str) -> None:
    array = expected(datatype, SAMPLES[datatype])
    blob = encode_binary(array, datatype)
    if DATATYPES[datatype].size:
        assert len(blob) == array.size * DATATYPES[datatype].size
    back = decode(datatype, [2, 3], binary=memoryview(blob))
    assert back.dtype == array.dtype
    assert back.tolist() == array.tolist()
    assert back.flags.writeable


def test_fp16_binary_round_trip_and_no_json_form() -> None:
    array = np.array([[0.5, -2.0], [65504.0, 1e-3]], dtype=np.float16)
    back = decode("FP16", [2, 2], binary=array.astype("<f2").tobytes())
    np.testing.assert_array_equal(back, array)
    with pytest.raises(ProtocolError, match=r"input 'x': FP16 has no JSON form.*binary"):
        decode("FP16", [2, 2], [0.5, -2.0, 1.0, 2.0])
    with pytest.raises(ProtocolError, match="output 'y' is FP16, which has no JSON form"):
        encode_json("output 'y'", array, "FP16")


def test_bf16_is_binary_only_and_decodes_to_float32() -> None:
    values = np.array([1.5, -2.0, 0.25, 3.0], dtype=np.float32)  # exact in bfloat16
    blob = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    back = decode("BF16", [4], binary=blob)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, values)
    with pytest.raises(ProtocolError, match="BF16 has no JSON form"):
        decode("BF16", [4], [1.5, -2.0, 0.25, 3.0])


def test_bytes_binary_is_length_prefixed() -> None:
    items = [b"", b"\xff\x00raw", "héllo".encode()]
    blob = b"".join(struct.pack("<I", len(b)) + b for b in items)
    back = decode("BYTES", [3], binary=blob)
    assert back.tolist() == items
    assert encode_binary(back, "BYTES") == blob
    with pytest.raises(ProtocolError, match=r"not UTF-8.*binary_data=true"):
        encode_json("output 'y'", back, "BYTES")


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (struct.pack("<I", 50) + b"abcdefgh", "ends inside element 0"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 9), "ends inside element 1"),
        (struct.pack("<I", 3) + b"abc" + b"\x00\x00", "ends inside element 1"),  # cut length
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 0) + b"zz", "2 bytes left after"),
        (b"\x00\x00\x00", "cannot hold 2 BYTES elements"),
    ],
)
def test_bytes_binary_malformed(blob: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode("BYTES", [2], binary=blob)


def test_count_mismatch_names_input() -> None:
    with pytest.raises(ProtocolError, match=r"input 'x': shape needs 4 elements but data has 3"):
        decode("FP32", [2, 2], [1, 2, 3])
    with pytest.raises(ProtocolError, match="needs 6 elements but data has 4"):
        decode("INT32", [2, 3], [[1, 2], [3, 4]])
    with pytest.raises(ProtocolError, match="needs 2 elements but data has 3"):
        decode("BYTES", [2], ["a", ["b", "c"]])


def test_ragged_nested_data() -> None:
    with pytest.raises(ProtocolError, match="ragged"):
        decode("FP32", [2, 2], [[1, 2], [3]])


def test_binary_size_mismatch() -> None:
    with pytest.raises(ProtocolError, match="binary data is 12 bytes but 4 FP32 elements need 16"):
        decode("FP32", [2, 2], binary=bytes(12))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([2, -1], "negative dimension"),
        ([100_000, 100_000], "too large"),
        ([0, 10**15], "too large"),  # zero elements, still absurd
        ([1] * 40, "40 dimensions"),
    ],
)
def test_bad_shapes_rejected_before_decoding(shape: list[int], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode("FP32", shape, [])
    with pytest.raises(ProtocolError, match=message):
        check_shape("input 'x'", shape)


def test_shape_limit_is_configurable() -> None:
    assert check_shape("t", [4, 5], max_elements=20) == 20
    with pytest.raises(ProtocolError, match="limit 19 elements"):
        check_shape("t", [4, 5], max_elements=19)


def test_unknown_datatype_suggests_the_closest() -> None:
    with pytest.raises(ProtocolError, match=r"unknown datatype 'FP33' — did you mean 'FP32'\?"):
        decode("FP33", [1], [1.0])
    with pytest.raises(ProtocolError, match="known: BOOL, UINT8"):
        decode("float", [1], [1.0])


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", ["1.5"], "FP32 data must be numbers"),
        ("FP32", [None], "FP32 data must be numbers"),
        ("FP32", [True], "FP32 data must be numbers"),
        ("INT32", [1.5], "INT32 data must be integers"),
        ("INT32", [1, "2"], "INT32 data must be integers"),
        ("UINT8", [300], "out of range for UINT8"),
        ("UINT8", [-1], "out of range for UINT8"),
        ("INT64", [1, 2**63], "out of range for INT64"),
        ("UINT64", [2**64], "out of range for UINT64"),
        ("BOOL", [1], "BOOL data must be booleans"),
        ("BYTES", [1], "BYTES data must be strings, got a number"),
    ],
)
def test_json_values_of_the_wrong_kind(datatype: str, data: list, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(datatype, [len(data)], data)


def test_bool_binary_must_be_zero_or_one() -> None:
    assert decode("BOOL", [2], binary=b"\x01\x00").tolist() == [True, False]
    with pytest.raises(ProtocolError, match="BOOL binary data must be bytes 0 or 1"):
        decode("BOOL", [2], binary=b"\x02\x00")


def test_data_and_binary_are_exclusive_and_one_is_needed() -> None:
    with pytest.raises(ProtocolError, match="both 'data' and"):
        decode("FP32", [1], [1.0], binary=bytes(4))
    with pytest.raises(ProtocolError, match="has no 'data'"):
        decode("FP32", [1])


def test_empty_tensors() -> None:
    assert decode("FP32", [0, 3], []).shape == (0, 3)
    assert decode("BYTES", [0], []).shape == (0,)
    assert decode("INT8", [0, 2], binary=b"").shape == (0, 2)


def test_datatype_of() -> None:
    assert datatype_of(np.zeros(2, np.float16)) == "FP16"
    assert datatype_of(np.array(["a"])) == "BYTES"
    assert datatype_of(np.array([b"a"])) == "BYTES"
    with pytest.raises(TypeError, match="complex"):
        datatype_of(np.zeros(2, np.complex64))


def test_big_endian_arrays_are_sent_little_endian() -> None:
    array = np.array([1.0, 2.0], dtype=">f4")
    assert encode_binary(array, "FP32") == np.array([1.0, 2.0], dtype="<f4").tobytes()
