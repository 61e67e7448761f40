"""The browser playground (GET /) and the two read-only routes it needs: the model list and model cards.

The page is static package data (serve/static/: HTML, CSS and a little JS, no build step). It calls
the server's own routes with the user's bearer token: `GET /v2/models`, `GET .../card`, then the
`classify` route (classifiers) or `infer` (translation, denoising, generation) by the card's task, so it
exercises exactly what clients use. The page and its assets are open (they
hold no data); the list and the cards need a token like model metadata does. `--no-playground`
removes the page; the list and card routes stay (clients use them too).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dlforge.serve.repository import ModelNotReady
from dlforge.serve.security import check_bearer
from dlforge.serve.state import ServeState

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "images.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
# The page runs only its own script and talks only to this server.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


async def page(request: Request) -> Response:
    """The playground page (GET / and GET /playground/{model})."""
    return HTMLResponse(_read("index.html"), headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:  # a fixed list: nothing else under the package is reachable
        raise HTTPException(404, f"no playground asset '{name}' (assets: {', '.join(ASSETS)})")
    return Response(_read(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


def _authorized(request: Request) -> ServeState:
    state: ServeState = request.app.state.serve
    check_bearer(request, state.settings.tokens)
    return state


async def list_models(request: Request) -> Response:
    """GET /v2/models: every model with its versions and whether one is ready (an extension of V2)."""
    state = _authorized(request)
    by_name: dict[str, dict[str, Any]] = {}
    for item in state.repository.index():
        entry = by_name.setdefault(item.name, {"name": item.name, "versions": [], "ready": False})
        entry["versions"].append(item.version)
        entry["ready"] = entry["ready"] or item.state == "READY"
    return JSONResponse({"models": list(by_name.values())})


async def card(request: Request) -> Response:
    """GET /v2/models/{m}[/versions/{v}]/card: the package manifest of the version that would answer."""
    state = _authorized(request)
    name, version = request.path_params["model"], request.path_params.get("version")
    instance = state.repository.get(name, version)
    if not instance.batcher.running:
        raise ModelNotReady(f"model '{name}' is not ready")
    manifest = instance.manifest.model_dump(mode="json") if hasattr(instance.manifest, "model_dump") else {}
    # `inputs`/`outputs` are what a client sends and gets (the codec's: `text` BYTES for a text model), as in
    # the V2 metadata; the ONNX graph's own tensors (token ids…) are kept beside them.
    return JSONResponse({**manifest, "name": instance.name, "version": instance.version,
                         "versions": state.repository.versions(name),
                         "inputs": [t.model_dump() for t in instance.codec.inputs],
                         "outputs": [t.model_dump() for t in instance.codec.outputs],
                         "graph_inputs": manifest.get("inputs", []), "graph_outputs": manifest.get("outputs", [])})
