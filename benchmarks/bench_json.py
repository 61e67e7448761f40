"""Request decoding: pydantic's JSON parser vs orjson + pydantic on the structure only, side by side.

The server used to parse V2 JSON bodies with `InferenceRequest.model_validate_json` (pydantic builds and
validates every number of `data`); it now parses with orjson and validates the small structure around
`data` (serve/protocol.py `validate_with_orjson`), for bodies over 64 KiB. Both are timed on the same
bodies in one run, then the numpy decode that follows either.

    PYTHONPATH=src python benchmarks/bench_json.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from dlforge.serve.protocol import InferenceRequest, decode_input, validate_with_orjson

SIZES = {"1 row (64 floats)": 1, "512 rows": 512, "12,000 rows (~15 MiB)": 12_000}


def _body(rows: int, nested: bool) -> bytes:
    x = np.random.default_rng(0).random((rows, 1, 8, 8), dtype=np.float32)
    data = x.tolist() if nested else x.reshape(-1).tolist()
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'body':24} {'layout':7} {'pydantic ms':>12} {'orjson ms':>10} {'speed-up':>9} {'+ numpy ms':>11}")
    for label, rows in SIZES.items():
        for nested in (False, True):
            body = _body(rows, nested)
            repeats = args.repeats if rows > 1000 else args.repeats * 20
            old = _median_ms(lambda b=body: InferenceRequest.model_validate_json(b), repeats)
            new = _median_ms(lambda b=body: validate_with_orjson(b, None), repeats)
            request = validate_with_orjson(body, None)
            decode = _median_ms(lambda r=request: decode_input(r.inputs[0], None), repeats)
            layout = "nested" if nested else "flat"
            print(f"{label:24} {layout:7} {old:12.2f} {new:10.2f} {old / new:8.1f}x {decode:11.2f}")


if __name__ == "__main__":
    main()
