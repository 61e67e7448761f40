"""The Ray Serve deployments: the plain server's V2 app inside Ray replicas (imported only where ray is installed).

A model deployment's replicas each run `create_app` restricted to one model (all its versions), so routes,
validation, batching, auth and limits are the very code `dlforge serve` runs: one protocol implementation.
Ray's proxy sends `/v2/models/<model>/...` to that model's application (longest route prefix); the front
deployment at `/` answers what belongs to no model: server health and metadata, the model list and the
playground page (whose card, classify and infer calls reach the models' applications), and 404s for unknown models.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from ray import serve
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dlforge.serve import playground as pg
from dlforge.serve.app import ServeState, create_app, error_response
from dlforge.serve.fastpath import InferFastPath
from dlforge.serve.repository import ModelNotFound, unknown_model
from dlforge.serve.routes import live, server_metadata
from dlforge.serve.security import check_bearer
from dlforge.serve.settings import Settings

READY_TIMEOUT_S = 5.0


class FullPath:
    """Hands the app an empty `root_path`: Ray's proxy puts the route prefix there, our routes match full paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.v2_app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "root_path": ""}
        await self.v2_app(scope, receive, send)


def _accepting(app: InferFastPath) -> bool:
    state: ServeState = app.state.serve
    return state.accepting and state.repository.ready()


@serve.deployment
@serve.ingress()
class ModelDeployment:
    """One model, every version of it, behind Ray Serve; each replica loads it once and batches on its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.v2_app: InferFastPath | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        self.v2_app = create_app(self.settings)  # Ray runs its lifespan: the packages load and warm up here
        return FullPath(self.v2_app)

    def check_health(self) -> None:
        """Ray replaces a replica whose check raises (e.g. a model failed to load)."""
        if self.v2_app is None or not _accepting(self.v2_app):
            raise RuntimeError(f"models {', '.join(self.settings.models)} are not loaded")

    async def ready(self) -> bool:
        return self.v2_app is not None and _accepting(self.v2_app)

    async def index(self) -> list[dict[str, Any]]:
        """This replica's repository index (versions and states), for the front's model list."""
        if self.v2_app is None:
            return []
        state: ServeState = self.v2_app.state.serve
        return [item.model_dump() for item in state.repository.index()]


@serve.deployment
@serve.ingress()
class FrontDeployment:
    """Server-level V2 routes for the whole set of model applications (`apps`: model name → application name)."""

    def __init__(self, settings: Settings, apps: dict[str, str]) -> None:
        self.settings = settings
        self.apps = apps

    def __serve_build_asgi_app__(self) -> ASGIApp:
        app = FastAPI(title="dlforge serve (ray)", docs_url=None, redoc_url=None, openapi_url=None)
        app.state.serve = ServeState(self.settings)  # server_metadata reads only the settings
        app.router.add_route("/v2/health/live", live, methods=["GET"])
        app.router.add_route("/v2/health/ready", self._ready, methods=["GET"])
        app.router.add_route("/v2", server_metadata, methods=["GET"])
        app.router.add_route("/v2/models", self._models, methods=["GET"])
        if self.settings.playground:  # the page and its assets; its card/classify/infer calls reach the models
            app.router.add_route("/", pg.page, methods=["GET"])
            app.router.add_route("/playground/{model}", pg.page, methods=["GET"])
            app.router.add_route("/playground/assets/{name}", pg.asset, methods=["GET"])
        app.router.add_route("/v2/models/{model}", self._unknown, methods=["GET", "POST"])
        app.router.add_route("/v2/models/{model}/{rest:path}", self._unknown, methods=["GET", "POST"])
        for kind in (Exception, HTTPException):
            app.add_exception_handler(kind, _handle)
        return app

    async def _ready(self, request: Request) -> Response:
        """Ready when one replica of every model application answers that its models are loaded."""
        answers = await asyncio.gather(*(self._model_ready(app) for app in self.apps.values()))
        if not all(answers):
            return JSONResponse({"error": "not ready"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"ready": True})

    async def _model_ready(self, app_name: str) -> bool:
        handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=app_name)
        try:
            return bool(await asyncio.wait_for(_ask_ready(handle), READY_TIMEOUT_S))
        except Exception:  # no replica yet, or it died: not ready, and the probe says so instead of failing
            return False

    async def _models(self, request: Request) -> Response:
        """GET /v2/models over every model application (as the plain server's list): a model whose replica does
        not answer is listed as not ready."""
        check_bearer(request, self.settings.tokens)
        indexes = await asyncio.gather(*(self._index(app) for app in self.apps.values()))
        models = [{"name": name, "versions": [i["version"] for i in index],
                   "ready": any(i["state"] == "READY" for i in index)} for name, index in zip(self.apps, indexes,
                                                                                                strict=True)]
        return JSONResponse({"models": models})

    async def _index(self, app_name: str) -> list[dict[str, Any]]:
        handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=app_name)
        try:
            return list(await asyncio.wait_for(_ask_index(handle), READY_TIMEOUT_S))
        except Exception:  # no replica yet, or it died: listed as not ready
            return []

    async def _unknown(self, request: Request) -> Response:
        return error_response(ModelNotFound(unknown_model(request.path_params["model"], list(self.apps))))


MODEL_DEPLOYMENT = "model"


async def _ask_ready(handle: Any) -> bool:
    return bool(await handle.ready.remote())


async def _ask_index(handle: Any) -> list[dict[str, Any]]:
    return list(await handle.index.remote())


async def _handle(request: Request, exc: Any) -> Response:
    return error_response(exc)
