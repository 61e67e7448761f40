"""/openapi.json describes every route the server has, for every option set (the fuzz test then reaches them all)."""

from __future__ import annotations

import itertools

import pytest

from dlforge.serve.openapi import openapi_document
from dlforge.serve.routes import routes


@pytest.mark.parametrize(("admin", "playground", "docs"), list(itertools.product([False, True], repeat=3)))
def test_the_document_describes_exactly_the_routes_served(admin: bool, playground: bool, docs: bool) -> None:
    served = {(path, method.lower()) for path, methods, _ in routes(admin=admin, docs=docs, playground=playground)
              for method in methods}
    document = openapi_document(admin=admin, playground=playground, docs=docs)
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert served == described
    assert ("/v2/repository/index", "post") in described if admin else ("/v2/repository/index", "post") not in described
    assert (("/", "get") in described) == playground and (("/docs", "get") in described) == docs


def test_every_reference_resolves_and_every_operation_answers_errors_as_json() -> None:
    document = openapi_document(admin=True, playground=True, docs=True)
    schemas = document["components"]["schemas"]
    text = repr(document)
    for name in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "200" in operation["responses"], (path, method)
            for code, response in operation["responses"].items():
                if code.startswith("4") or code.startswith("5"):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorResponse"}, (path, method, code)
