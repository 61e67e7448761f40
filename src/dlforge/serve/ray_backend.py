"""`dlforge serve PATH --backend ray`: every model of a package or repository as a Ray Serve application.

Ray brings what one `dlforge serve` process cannot: replicas on several machines, placement by CPUs/GPUs,
replacement of dead replicas and autoscaling on queue length. Each model gets its own application (route
prefix `/v2/models/<model>`) with its own replicas; inside each replica the plain server's app and batcher
run unchanged (ray_deployments.py). This module holds the options, the checks that turn a bad setup into
one clear error, and the deploy-then-wait loop; it imports ray only when asked to run.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlforge.errors import UserError
from dlforge.serve.repository import discover
from dlforge.serve.settings import Settings

FRONT_APP = "dlforge"
CONNECT_TIMEOUT_S = 5.0


class RayBackendError(UserError):
    """A Ray setup the user can fix: missing extra, unreachable cluster, bad replica settings."""


class Autoscaling(BaseModel):
    """Ray Serve autoscaling: replicas between min and max, aiming at `target_ongoing_requests` per replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)
    # Several requests per replica let its batcher form batches; Ray's default (2) would scale out first.
    target_ongoing_requests: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        return self


class RayOptions(BaseModel):
    """How each model's deployment runs: replica count or autoscaling, resources per replica, the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = None  # an existing cluster ("HOST:PORT" of its head); None = start a local one
    replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    num_cpus: float = Field(1.0, ge=0)  # per replica; also its inference threads
    num_gpus: float = Field(0.0, ge=0)
    # Requests Ray lets into one replica at once: the most its batcher can ever batch together.
    max_ongoing_requests: int = Field(32, ge=1)

    def deployment_options(self) -> dict[str, Any]:
        scale: dict[str, Any] = ({"autoscaling_config": self.autoscaling.model_dump()} if self.autoscaling
                                 else {"num_replicas": self.replicas})
        return {**scale, "max_ongoing_requests": self.max_ongoing_requests,
                "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}}


def parse_options(**values: Any) -> RayOptions:
    """RayOptions from CLI values, with a one-line error naming the setting."""
    from pydantic import ValidationError

    try:
        return RayOptions.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "autoscaling"
        raise RayBackendError(f"invalid Ray settings: {where}: {first['msg'].removeprefix('Value error, ')}") from None


@dataclass(frozen=True)
class AppPlan:
    """One Ray Serve application to deploy: its name, HTTP route prefix and the settings its replicas get."""

    name: str
    route_prefix: str
    settings: Settings


def plan(settings: Settings, options: RayOptions) -> list[AppPlan]:
    """One application per model (replicas restricted to it), inference threads matched to the replica's CPUs."""
    try:
        models = sorted(discover(settings.path))
    except FileNotFoundError as exc:
        raise RayBackendError(str(exc)) from None
    threads = settings.intra_op_threads or max(1, round(options.num_cpus))
    return [AppPlan(app_name(model), f"/v2/models/{model}",
                    settings.model_copy(update={"models": (model,), "intra_op_threads": threads, "workers": 1}))
            for model in models]


def app_name(model: str) -> str:
    return f"{FRONT_APP}-{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}"


def run_ray(settings: Settings, options: RayOptions, say: Callable[[str], None]) -> None:
    """Deploy, wait for SIGINT/SIGTERM, then delete what was deployed (and a cluster this call started)."""
    apps = plan(settings, options)
    ray, serve = _import_ray()
    if options.address:
        check_reachable(options.address)
    try:
        ray.init(address=options.address, logging_level="WARNING", log_to_driver=False)
    except Exception as exc:  # Ray raises bare Exception too (e.g. a local node that did not start in time)
        where = f"connect to the Ray cluster at {options.address}" if options.address else "start a local Ray cluster"
        raise RayBackendError(f"could not {where}: {exc}") from None
    try:
        with _deployed(serve, settings, options, apps) as url:
            say(f"serving {', '.join(a.route_prefix for a in apps)} through Ray Serve at {url} (Ctrl-C stops)")
            _wait_for_stop()
    finally:
        if options.address is None:
            serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def _deployed(serve: Any, settings: Settings, options: RayOptions, apps: list[AppPlan]) -> Iterator[str]:
    from dlforge.serve import ray_deployments as rd

    model_deployment: Any = rd.ModelDeployment  # a ray Deployment (its decorators hide that from mypy)
    front_deployment: Any = rd.FrontDeployment
    serve.start(http_options={"host": settings.host, "port": settings.port})
    _check_proxy(serve, settings)
    names: list[str] = []
    try:
        for app in apps:
            names.append(app.name)
            deployment = model_deployment.options(name=rd.MODEL_DEPLOYMENT, **options.deployment_options())
            _run_app(serve, deployment.bind(app.settings), app.name, app.route_prefix)
        front = front_deployment.options(num_replicas=1, ray_actor_options={"num_cpus": 0})
        names.append(FRONT_APP)
        apps_by_model = {a.settings.models[0]: a.name for a in apps}
        _run_app(serve, front.bind(settings.model_copy(update={"models": ()}), apps_by_model), FRONT_APP, "/")
        yield f"http://{settings.host}:{settings.port}"
    finally:
        for name in reversed(names):
            with contextlib.suppress(Exception):  # already gone; delete the rest regardless
                serve.delete(name)


def _check_proxy(serve: Any, settings: Settings) -> None:
    """A cluster has one Serve HTTP proxy: if it already listens elsewhere, our --host/--port cannot apply."""
    try:
        config = serve.context._get_global_client().http_config  # no public accessor in Ray Serve
    except Exception:
        return
    if (config.host, config.port) != (settings.host, settings.port):
        raise RayBackendError(f"Ray Serve on this cluster already listens on {config.host}:{config.port}; "
                              f"pass --host {config.host} --port {config.port} (one HTTP proxy per cluster)")


def _run_app(serve: Any, bound: Any, name: str, route_prefix: str) -> None:
    try:
        serve.run(bound, name=name, route_prefix=route_prefix)
    except RuntimeError as exc:  # Ray's "Deploying application … failed" after the replicas kept failing
        raise RayBackendError(f"Ray could not start application '{name}': {exc}") from None


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise RayBackendError("--backend ray needs Ray Serve: pip install 'dlforge[ray]'") from None
    return ray, serve


def check_reachable(address: str) -> None:
    """Fail fast on a cluster that is not there (ray.init would retry for a long time)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayBackendError(f"--ray-address must be HOST:PORT of the head node (GCS), e.g. 127.0.0.1:6379; "
                              f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayBackendError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
                              "`ray start --head --port PORT` or drop --ray-address to start a local one") from None


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
