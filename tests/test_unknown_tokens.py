"""Text the model cannot see is reported, never answered silently (#30 item 6): the share of [UNK] tokens is a
`warning:` line in `dlforge translate` / `dlforge predict` and a response parameter over HTTP and gRPC.

The packages are the prebuilt ones of tests/fixtures/packages_v0 (char tokenizers): Cyrillic letters are
outside both vocabularies, so each is one [UNK].
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.export.package import load_package
from dlforge.taskapi import get_codec
from dlforge.text import PAD_ID, UNK_ID, unknown_parameters, unknown_share, unknown_warnings
from tests.serve_helpers import free_port, serve_process

V0 = Path(__file__).parent / "fixtures" / "packages_v0"
UNKNOWN = "жжжж"  # four characters no fixture tokenizer knows


def test_the_share_counts_unknown_tokens_among_real_ones_and_ignores_padding() -> None:
    ids = np.array([[5, 6, 7, 8], [UNK_ID, UNK_ID, 5, PAD_ID], [UNK_ID, PAD_ID, PAD_ID, PAD_ID]])
    assert unknown_share(ids).tolist() == pytest.approx([0.0, 2 / 3, 1.0])
    assert unknown_parameters(ids) == {"unknown_token_share": round(3 / 8, 4), "unknown_token_share_max": 1.0}
    warnings = unknown_warnings(ids, ["a", "b", "c"])
    assert [w.split(":")[0] for w in warnings] == ["b", "c"] and "67% of its tokens are unknown" in warnings[0]


def test_translate_warns_about_a_sentence_it_cannot_read_and_still_translates_the_rest() -> None:
    result = CliRunner().invoke(app, ["translate", str(V0 / "num2words"), "42", UNKNOWN])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2  # both translated: the warning is a warning
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and re.match(r"warning: sentence 2: (\d+)% of its tokens are unknown", warnings[0])


def test_predict_warns_about_text_that_is_mostly_unknown() -> None:
    result = CliRunner().invoke(app, ["predict", str(V0 / "langid_rnn"), "--text", "hallo welt", "--text", UNKNOWN])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and re.match(r"warning: --text 2: (\d+)% of its tokens are unknown", warnings[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    root = tmp_path_factory.mktemp("unknown")
    for name in ("langid_rnn", "num2words"):
        shutil.copytree(V0 / name, root / "repo" / name / "1")
    grpc_port = free_port()
    with serve_process(root / "repo", "--grpc-port", str(grpc_port), log=root / "server.log") as (url, _):
        yield url, grpc_port


@pytest.mark.serve
@pytest.mark.parametrize(("model", "texts", "worst"), [
    ("langid_rnn", ["hallo", UNKNOWN], 1.0),
    ("num2words", ["12", "34"], 0.0),
])
def test_the_response_carries_the_unknown_share_over_http_and_grpc(server: tuple[str, int], model: str,
                                                                   texts: list[str], worst: float) -> None:
    url, grpc_port = server
    codec = get_codec(load_package(V0 / model))
    share = codec.response_parameters(codec.decode_texts(texts))["unknown_token_share"]
    assert (share > 0) == (worst > 0)
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    answer = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameters"] == {"unknown_token_share": share, "unknown_token_share_max": worst}
    client = tc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    tensor = tc.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    response = client.infer(model, [tensor]).get_response()
    assert response.parameters["unknown_token_share"].double_param == pytest.approx(share)
    assert response.parameters["unknown_token_share_max"].double_param == pytest.approx(worst)
    client.close()
