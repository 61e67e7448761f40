"""schemathesis against the server's own /openapi.json: generated requests of every shape, no 5xx.

The document is the one clients get (serve/openapi.py); schemathesis derives valid and invalid
requests from it (wrong types, missing fields, odd strings in paths and queries) and every answer
must be a 2xx or a 4xx with `{"error": ...}`, never a server error. Derandomized, so a failure is
reproducible; the example budget keeps it to well under a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlforge.serve.settings import Settings
from tests.serve_helpers import running

# Generation is CPU-bound (hypothesis builds bodies from the JSON Schema): on a loaded 2-core machine the
# example budget plus the package fixture can pass the default 300 s limit, hence a longer one.
pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.timeout(900)]
ADMIN = {"Authorization": "Bearer admin"}


def test_no_generated_request_gets_a_server_error(model_package: Path) -> None:
    with running(Settings(path=model_package, admin_token="admin")) as (url, _):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        failures: list[str] = []
        seen: dict[int, int] = {}

        @settings(max_examples=150, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.one_of([op.as_strategy() for op in operations]))
        def fuzz(case: schemathesis.Case) -> None:
            if case.path.endswith("/unload"):  # unloading the model would turn the rest into 503s
                return
            if case.path_parameters and "model" in case.path_parameters and "{version}" not in case.path:
                case.path_parameters["model"] = "tiny"  # the real model: fuzzed bodies reach its validation
            reply = case.call(base_url=url, headers=ADMIN, timeout=30)
            seen[reply.status_code] = seen.get(reply.status_code, 0) + 1
            if reply.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} → {reply.status_code}: {reply.text[:200]}")
            elif reply.status_code >= 400:
                assert "error" in reply.json(), reply.text

        fuzz()
    assert not failures, "\n".join(failures[:10])
    assert sum(seen.values()) > 50 and 200 in seen and 400 in seen, seen  # valid and invalid requests both
