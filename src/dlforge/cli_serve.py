"""`dlforge serve`: the command line of the V2 server (uvicorn on this machine, or Ray Serve), kept apart from
cli.py because its options are many; cli.py registers it. Everything serving is imported when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlforge.console import console, err
from dlforge.errors import UserError

PathArg = Annotated[Path, typer.Argument(help="a model package, or a repository `REPO/<model>/<version>/`")]


def serve(
    path: PathArg,
    host: Annotated[str, typer.Option(help="interface to bind; 0.0.0.0 exposes it to the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    grpc_port: Annotated[int | None, typer.Option(help="also serve the KServe V2 gRPC API on this port")] = None,
    playground: Annotated[bool, typer.Option(help="serve the browser playground at GET /")] = True,
    workers: Annotated[str, typer.Option(
        help="server processes behind the one port; auto: from the cores and the model's speed (logged)")] = "auto",
    max_batch_size: Annotated[int | None, typer.Option(help="override the manifest's serving.max_batch_size")] = None,
    max_queue_delay_ms: Annotated[float | None, typer.Option(help="override serving.max_queue_delay_ms")] = None,
    max_queue: Annotated[int | None, typer.Option(
        help="requests waiting per model before 503 (default: what the model clears in --timeout-s)")] = None,
    max_batch_rows: Annotated[int | None, typer.Option(
        help="rows one request may carry (default: serving.max_batch_rows, else ~64 MiB of decoded input)")] = None,
    max_inflight: Annotated[int | None, typer.Option(
        help="requests admitted per model and worker, from before the body is read until answered; 503 + "
        "Retry-After (gRPC: RESOURCE_EXHAUSTED) above (default: two batches)")] = None,
    runtime: Annotated[str, typer.Option(help="onnx (ONNX Runtime) or torch")] = "onnx",
    token: Annotated[list[str] | None, typer.Option(help="bearer token required for inference (repeatable)")] = None,
    token_file: Annotated[Path | None, typer.Option(help="file with one bearer token per line")] = None,
    admin_token: Annotated[str | None, typer.Option(
        envvar="DLFORGE_ADMIN_TOKEN", help="enables the repository API (load/unload); prefer the env var or a file: "
        "the command line is visible in ps")] = None,
    admin_token_file: Annotated[Path | None, typer.Option(help="file holding the admin token")] = None,
    max_body_mb: Annotated[float, typer.Option(help="request body limit in MiB (413 above it)")] = 64,
    max_json_mb: Annotated[float, typer.Option(help="limit for the JSON part of a body in MiB (binary beyond)")] = 16,
    timeout_s: Annotated[float, typer.Option(help="request deadline in seconds (504 after it)")] = 30,
    threads: Annotated[int | None, typer.Option(help="inference threads per worker (default: cores / workers)")] = None,
    inline_max_ms: Annotated[float, typer.Option(
        help="run batches on the event loop if the model's full-batch latency is below this; 0: never")] = 2.0,
    allow_nonfinite: Annotated[bool, typer.Option(help="accept NaN/Inf inputs (refused with 400 by default)")] = False,
    docs: Annotated[bool, typer.Option(help="serve the /docs page (/openapi.json is always served)")] = False,
    access_log: Annotated[bool, typer.Option(help="one JSON line per request on stderr (~25 µs of CPU each)")] = True,
    limit_concurrency: Annotated[int, typer.Option(
        help="open connections (or requests) per worker; a request on one more gets 503 + Retry-After and a close")]
    = 1024,
    max_header_kb: Annotated[int, typer.Option(help="request line + headers limit in KiB (431 above)")] = 64,
    header_timeout_s: Annotated[float, typer.Option(help="time a request's headers may take to arrive")] = 10.0,
    backend: Annotated[str, typer.Option(help="uvicorn (this machine) or ray (Ray Serve: replicas, autoscaling)")]
    = "uvicorn",
    ray_address: Annotated[str | None, typer.Option(help="ray: HOST:PORT of an existing cluster's head")] = None,
    replicas: Annotated[int | None, typer.Option(help="ray: replicas per model (fixed)")] = None,
    min_replicas: Annotated[int | None, typer.Option(help="ray: autoscaling lower bound")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="ray: autoscale up to this many replicas per model")] = None,
    target_ongoing_requests: Annotated[float | None, typer.Option(help="ray: autoscaling target per replica")] = None,
    replica_cpus: Annotated[float | None, typer.Option(help="ray: CPUs per replica (also its threads)")] = None,
    replica_gpus: Annotated[float | None, typer.Option(help="ray: GPUs per replica")] = None,
) -> None:
    """Serve a model package (or a repository of them) over the Open Inference Protocol (KServe V2).

    Examples: `dlforge serve runs/digits_cnn/package` (then open http://127.0.0.1:8000/),
    `dlforge serve models/ --workers 2 --token-file /run/token --grpc-port 8001`,
    `dlforge serve models/ --backend ray --ray-address 10.0.0.5:6379 --replicas 4 --replica-cpus 2`
    """
    from pydantic import ValidationError

    from dlforge.serve.repository import discover
    from dlforge.serve.server import run_server
    from dlforge.serve.settings import Settings

    if workers != "auto" and not workers.lstrip("-").isdigit():
        raise UserError(f"--workers: a number of processes or auto, got {workers!r}")
    tokens = [*(token or []), *_read_tokens(token_file)]
    admin = _read_tokens(admin_token_file)[0] if admin_token_file else admin_token
    try:
        settings = Settings(path=path, host=host, port=port, grpc_port=grpc_port, playground=playground,
                            workers=None if workers == "auto" else workers,  # type: ignore[arg-type]
                            runtime=runtime,  # type: ignore[arg-type]
                            tokens=tuple(tokens), admin_token=admin, max_body_bytes=int(max_body_mb * 2**20),
                            max_json_bytes=int(max_json_mb * 2**20),
                            max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms, max_queue=max_queue,
                            max_batch_rows=max_batch_rows, max_inflight=max_inflight,
                            request_timeout_s=timeout_s, intra_op_threads=threads,
                            inline_max_ms=inline_max_ms, allow_nonfinite=allow_nonfinite, docs=docs,
                            access_log=access_log,
                            limit_concurrency=limit_concurrency, max_header_bytes=max_header_kb << 10,
                            header_timeout_s=header_timeout_s)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    discover(path)  # a wrong PATH is said here, before the server starts
    if settings.exposed_without_token():
        err.print(f"[bold yellow]warning:[/] binding {host} without --token: anyone who can reach this port "
                  "can run the model; pass --token or --token-file", highlight=False)
    ray_values = {"address": ray_address, "replicas": replicas, "num_cpus": replica_cpus, "num_gpus": replica_gpus,
                  "autoscaling": _autoscaling(min_replicas, max_replicas, target_ongoing_requests)}
    if backend == "ray":
        _serve_ray(settings, ray_values)
    elif backend != "uvicorn" or any(v is not None for v in ray_values.values()):
        err.print(f"[bold red]error:[/] --backend {backend}: expected uvicorn or ray (the ray options need "
                  "--backend ray)", highlight=False)
        raise typer.Exit(2)
    else:
        run_server(settings)


def _autoscaling(low: int | None, high: int | None, target: float | None) -> dict[str, Any] | None:
    if low is None and high is None and target is None:
        return None
    values = {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": target}
    return {k: v for k, v in values.items() if v is not None}


def _serve_ray(settings: Any, values: dict[str, Any]) -> None:
    """Ray Serve: one application per model, the same V2 app in every replica; bad setups → one error line."""
    from dlforge.serve.ray_backend import RayBackendError, parse_options, run_ray

    try:
        if values["replicas"] is not None and values["autoscaling"] is not None:
            raise RayBackendError("give either --replicas (fixed) or --min/--max-replicas (autoscaling), not both")
        if settings.workers not in (None, 1):
            raise RayBackendError("--workers is for the uvicorn backend; with --backend ray use --replicas")
        run_ray(settings, parse_options(**values), lambda line: console.print(line, highlight=False, soft_wrap=True))
    except RayBackendError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _read_tokens(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        tokens = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the token file ({exc})") from None
    if not tokens:
        raise UserError(f"{path}: the token file is empty")
    return tokens


