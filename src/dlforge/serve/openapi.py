"""The server's OpenAPI 3.1 document, built from the V2 wire types in protocol.py (the one definition).

The routes are plain Starlette routes (no per-call FastAPI parameter solving), so FastAPI cannot
generate this document itself; it is assembled here from the same pydantic models the server
validates with, so clients, code generators and fuzzers (schemathesis) see what the server checks.
It describes every route of routes.py's table for the same options (a test checks the two agree).
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import HTMLResponse

from dlforge import __version__
from dlforge.serve.protocol import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    RepositoryIndexItem,
    RepositoryIndexRequest,
    ServerLive,
    ServerMetadata,
    ServerReady,
)

_MODELS: list[type[BaseModel]] = [ErrorResponse, InferenceRequest, InferenceResponse, ModelMetadata, ModelReady,
                                  RepositoryIndexItem, RepositoryIndexRequest, ServerLive, ServerMetadata, ServerReady]
_MODEL_LIST = {"type": "object", "required": ["models"], "properties": {"models": {"type": "array", "items": {
    "type": "object", "required": ["name", "versions", "ready"], "properties": {
        "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
        "ready": {"type": "boolean"}}}}}}
_ERRORS = {400: "invalid request", 401: "missing bearer token", 403: "wrong token", 404: "unknown model or version",
           408: "the body did not arrive in time", 413: "body too large",
           503: "not ready, overloaded or queue full (see Retry-After)", 504: "deadline passed"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", **ok}}
    for code in errors:
        out[str(code)] = {"description": _ERRORS[code], **_json(_ref("ErrorResponse"))}
    return out


def _params(versioned: bool) -> list[dict[str, Any]]:
    names = ["model", "version"] if versioned else ["model"]
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


def _model_routes(base: str, versioned: bool) -> dict[str, Any]:
    params = _params(versioned)
    classify_ok = _json({"type": "object", "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"},
        "predictions": {"type": "array", "items": {"type": "object"}}}})
    upload = {"multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "an image (image models)"},
        "text": {"type": "string", "description": "one text (text models)"}}}}}
    secured: dict[str, Any] = {"security": [{}, {"bearer": []}]}
    return {
        base: {"get": {"summary": "model metadata", "parameters": params, **secured,
                       "responses": _responses(_json(_ref("ModelMetadata")), 401, 403, 404, 503)}},
        f"{base}/ready": {"get": {"summary": "model readiness", "parameters": params, **secured,
                                  "responses": _responses(_json(_ref("ModelReady")), 401, 403, 404, 503)}},
        f"{base}/infer": {"post": {
            "summary": "inference (JSON; the binary tensor extension is also accepted)", "parameters": params,
            **secured, "requestBody": {"required": True, **_json(_ref("InferenceRequest"))},
            "responses": _responses(_json(_ref("InferenceResponse")), 400, 401, 403, 404, 408, 413, 503, 504)}},
        f"{base}/classify": {"post": {
            "summary": "one image (file) or one text → top-k labels", **secured,
            "parameters": [*params, {"name": "top_k", "in": "query", "required": False,
                                     "schema": {"type": "integer", "minimum": 1, "maximum": 999999}}],
            "requestBody": {"required": True, "content": upload},
            "responses": _responses(classify_ok, 400, 401, 403, 404, 408, 413, 503, 504)}},
        f"{base}/card": {"get": {"summary": "model card: the package manifest of the version that answers",
                                 "parameters": params, **secured,
                                 "responses": _responses(_json({"type": "object"}), 401, 403, 404, 503)}},
    }


def _page_routes() -> dict[str, Any]:
    """The browser playground (absent with --no-playground): static, open, no data in it."""
    html = {"200": {"description": "the playground page", "content": {"text/html": {}}}}
    model = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    asset = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/": {"get": {"summary": "playground page", "responses": html}},
        "/playground/{model}": {"get": {"summary": "playground page for one model", "parameters": model,
                                        "responses": html}},
        "/playground/assets/{name}": {"get": {
            "summary": "the page's script and style sheet", "parameters": asset,
            "responses": {"200": {"description": "OK", "content": {"text/javascript": {}, "text/css": {}}},
                          "404": {"description": "no such asset", **_json(_ref("ErrorResponse"))}}}},
    }


def _admin_routes() -> dict[str, Any]:
    admin: dict[str, Any] = {"security": [{"bearer": []}]}
    name = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    state = _json({"type": "object"})
    return {
        "/v2/repository/index": {"post": {
            "summary": "repository index", **admin,
            "requestBody": {"required": False, **_json(_ref("RepositoryIndexRequest"))},
            "responses": _responses(_json({"type": "array", "items": _ref("RepositoryIndexItem")}), 400, 401, 403)}},
        "/v2/repository/models/{model}/load": {"post": {"summary": "(re)load a model", "parameters": name, **admin,
                                                        "responses": _responses(state, 400, 401, 403, 404)}},
        "/v2/repository/models/{model}/unload": {"post": {"summary": "unload a model", "parameters": name, **admin,
                                                          "responses": _responses(state, 401, 403, 404)}},
    }


@functools.cache
def openapi_document(admin: bool, playground: bool = True, docs: bool = False) -> dict[str, Any]:
    """The document for a server with (or without) the repository API, the playground page and /docs;
    built once per process and option set."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}")
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"summary": "liveness", "responses": _responses(_json(_ref("ServerLive")))}},
        "/v2/health/ready": {"get": {"summary": "readiness", "responses": _responses(_json(_ref("ServerReady")), 503)}},
        "/v2": {"get": {"summary": "server metadata", "responses": _responses(_json(_ref("ServerMetadata")))}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "OK", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "this document",
                                  "responses": _responses(_json({"type": "object"}))}},
        "/v2/models": {"get": {"summary": "every model with its versions and readiness (extension)",
                               "security": [{}, {"bearer": []}],
                               "responses": _responses(_json(_ref("ModelList")), 401, 403)}},
    }
    paths.update(_model_routes("/v2/models/{model}", versioned=False))
    paths.update(_model_routes("/v2/models/{model}/versions/{version}", versioned=True))
    if playground:
        paths.update(_page_routes())
    if admin:
        paths.update(_admin_routes())
    if docs:
        paths["/docs"] = {"get": {"summary": "Swagger UI for this document",
                                  "responses": {"200": {"description": "OK", "content": {"text/html": {}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "dlforge serve (Open Inference Protocol / KServe V2)", "version": __version__},
        "paths": paths,
        "components": {"schemas": {**defs.get("$defs", {}), "ModelList": _MODEL_LIST},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def docs_page() -> HTMLResponse:
    """Swagger UI for /openapi.json (opt-in with --docs; the page loads its script from a CDN)."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title="dlforge serve")
