"""The batching policy (one precedence rule), the shared image decoder and the input value rules: pure units."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlforge.export.inputs import InputError, InputRules, check_values
from dlforge.export.package import ServingInfo
from dlforge.imagedecode import ImageError, decode_image
from dlforge.serve.policy import MAX_BATCH_SIZE, MAX_QUEUE_CAP, resolve_policy
from dlforge.serve.settings import Settings

SETTINGS = Settings(path=Path("."))


def test_policy_precedence_is_cli_then_manifest_then_measured() -> None:
    measured = resolve_policy(SETTINGS, ServingInfo(), one_row_s=0.001, full_batch_s=0.004, row_bytes=256)
    assert measured.max_batch_size == MAX_BATCH_SIZE and measured.max_queue_delay_ms == pytest.approx(1.0)
    assert measured.inline is False  # 4 ms full batch is over the 2 ms inline threshold
    assert dict(measured.sources)["max_queue_delay_ms"] == "measured"
    manifest = ServingInfo(max_batch_size=8, max_queue_delay_ms=3.0, max_batch_rows=100)
    got = resolve_policy(SETTINGS, manifest, 0.001, None, 256)
    assert (got.max_batch_size, got.max_queue_delay_ms, got.max_batch_rows) == (8, 3.0, 100)
    cli = SETTINGS.model_copy(update={"max_batch_size": 4, "max_queue_delay_ms": 0.0, "max_queue": 7})
    from_cli = resolve_policy(cli, manifest, 0.001, None, 256)
    assert (from_cli.max_batch_size, from_cli.max_queue_delay_ms, from_cli.max_queue) == (4, 0.0, 7)
    assert dict(from_cli.sources) == {"max_batch_size": "cli", "max_queue_delay_ms": "cli", "max_queue": "cli",
                                      "max_batch_rows": "manifest", "max_inflight": "default"}


def test_requests_in_flight_are_two_batches_per_process() -> None:
    """Admission's in-flight bound: two full batches per process (the kernel spreads connections over the
    workers unevenly, so each gets the whole bound), unless the command line says otherwise."""
    policy = resolve_policy(SETTINGS, ServingInfo(max_batch_size=16), 0.001, None, 256)
    assert policy.max_inflight == 32 and dict(policy.sources)["max_inflight"] == "default"
    assert "max in flight 32 (default)" in policy.describe()
    two = SETTINGS.model_copy(update={"workers": 2})
    assert resolve_policy(two, ServingInfo(max_batch_size=16), 0.001, None, 256).max_inflight == 32
    cli = SETTINGS.model_copy(update={"max_inflight": 3})
    assert resolve_policy(cli, ServingInfo(), 0.001, None, 256).max_inflight == 3


def test_queue_and_row_caps_follow_latency_and_input_size() -> None:
    slow = resolve_policy(SETTINGS, ServingInfo(), one_row_s=0.1, full_batch_s=None, row_bytes=4 << 20)
    # 32 rows x 0.1 s = 3.2 s a batch: a 30 s deadline clears ~10 batches, so ~10 x 32 requests may wait
    assert slow.max_queue == 10 * 32 and slow.max_queue_delay_ms == 5.0
    assert slow.max_batch_rows == 32  # 64 MiB / 4 MiB = 16 rows, but never fewer than one batch
    fast = resolve_policy(SETTINGS, ServingInfo(), one_row_s=1e-5, full_batch_s=1e-4, row_bytes=256)
    assert fast.max_queue == MAX_QUEUE_CAP and fast.inline and fast.max_batch_rows == 65_536


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (16, 12)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(("data", "words"), [
    (_png_claiming(20000, 20000), "too many pixels"), (_png_claiming(7000, 7000), "7000x7000"),
    (_encoded("PNG")[:50], "could not be decoded"), (_encoded("TIFF", "LAB"), "not an image in a format we read"),
    (_encoded("PPM"), "not an image in a format we read"), (b"", "not an image"),
])
def test_the_image_decoder_turns_every_failure_into_one_error(data: bytes, words: str) -> None:
    with pytest.raises(ImageError, match=words):
        decode_image(data, (8, 8), 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_the_image_decoder_reads_the_common_formats(fmt: str) -> None:
    out = decode_image(_encoded(fmt), (8, 8), 1)
    assert out.shape == (1, 8, 8) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1


def test_input_rules_refuse_empty_dims_unknown_tokens_and_nonfinite_values() -> None:
    tokens = InputRules(vocab_size=10)
    check_values("x", np.array([[0, 9]]), tokens)
    for array, words in ((np.zeros((1, 0), np.int64), "empty dimension 1"), (np.array([[10]]), "token id 10"),
                         (np.array([[-1]]), "token id -1"), (np.zeros((0, 3)), "empty batch")):
        with pytest.raises(InputError, match=words):
            check_values("x", array, tokens)
    with pytest.raises(InputError, match="NaN or infinite"):
        check_values("x", np.array([[np.inf]], np.float32), InputRules())
    check_values("x", np.array([[np.nan]], np.float32), InputRules(allow_nonfinite=True))
