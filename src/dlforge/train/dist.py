"""Everything torch.distributed, in one place: launching, torchrun's environment, process group, DDP / FSDP2,
collectives and full state dicts.

Nothing else in dlforge imports torch.distributed. A single process (no torchrun) is world size 1
and every helper here degrades to a no-op, so the same training code runs everywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from dlforge.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])
TIMEOUT_ENV = "DLFORGE_DIST_TIMEOUT"  # seconds a collective may wait for a silent peer
DEFAULT_TIMEOUT_S = 300
LAUNCHED_ENV = "DLFORGE_LAUNCHED"  # set for workers started by `dlforge train --nproc`
# torchrun's agent shares one TCPStore across restarts, but workers no longer prefix their keys per attempt,
# so a restarted rank can read a dead peer's gloo/nccl address and hang in init_process_group
# (pytorch/pytorch#135712). Opting out gives every rendezvous round a fresh store.
FRESH_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class UnsupportedSetup(UserError, ValueError):
    """The configuration asks for something the chosen device cannot do (said before any work starts)."""


class WorkerFailed(RuntimeError):
    """A worker of a `--nproc` job failed; the message names its rank and its error."""


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` → this worker's GPU when CUDA is present, else the CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UnsupportedSetup("train.device: 'cuda' was asked for but no CUDA device is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistContext:
    """Read torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) and join the group: nccl on GPU, gloo on CPU.

    The group has a finite timeout so a rank that stops answering ends the job instead of hanging it.
    """
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return DistContext(rank, local_rank, world, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def env_rank() -> int:
    """This process's global rank from torchrun's environment (0 without torchrun); usable before `setup`."""
    return int(os.environ.get("RANK", 0))


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0 on the first attempt or without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


def under_launcher() -> bool:
    """True inside a worker started by torchrun (or `--nproc`)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def reports_to_user() -> bool:
    """Whether this process prints results: a lone process, or rank 0 under a plain torchrun
    (under `--nproc` the launching command prints them once)."""
    return env_rank() == 0 and LAUNCHED_ENV not in os.environ


def record_errors(fn: F) -> F:
    """Under torchrun, write a worker's exception to its error file so the launcher can show it."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
            return fn(*args, **kwargs)
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(fn, error_handler=_atomic_error_handler())(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _atomic_error_handler() -> Any:
    """torch's ErrorHandler, but the error file appears whole or not at all.

    torch writes it in place (open "w", then json.dump). When a peer dies, the survivor fails in its
    collective and writes its file while the agent is already collecting failures; an agent that reads the
    half-written file raises "Failed to parse reply file" and ends the job instead of restarting it.
    """
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    class AtomicErrorHandler(ErrorHandler):
        def _write_error_file(self, file_path: str, error_msg: str) -> None:
            _write_atomically(Path(file_path), error_msg)

        def record_exception(self, e: BaseException) -> None:
            file = self._get_error_file_path()
            if file:
                data = {"message": {"message": f"{type(e).__name__}: {e}", "extraInfo": {
                    "py_callstack": traceback.format_exc(), "timestamp": str(int(time.time()))}}}
                _write_atomically(Path(file), json.dumps(data))

    return AtomicErrorHandler()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


# --- launching -------------------------------------------------------------------------------------------


def launch(nproc: int, max_restarts: int, worker_args: list[str]) -> None:
    """Run `python -m dlforge <worker_args>` in `nproc` local workers through torchrun's API.

    torchrun restarts the whole group up to `max_restarts` times after a worker dies; when it gives
    up, raises WorkerFailed with the failing rank's own error message.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args([
        "--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
        "--monitor-interval=0.1", "--module", "dlforge", *worker_args])
    saved = {key: os.environ.get(key) for key in (LAUNCHED_ENV, FRESH_STORE_ENV)}
    os.environ[LAUNCHED_ENV] = "1"  # inherited by the workers
    os.environ.setdefault(FRESH_STORE_ENV, "1")  # read by the agent's rendezvous, see above
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise WorkerFailed(describe_failure(rank, failure.exitcode, failure.message, max_restarts)) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def describe_failure(rank: int, exitcode: int, message: str, max_restarts: int) -> str:
    if exitcode < 0:
        message = f"killed by signal {-exitcode}"
    elif "To enable traceback" in message:  # no error file: the worker exited without an exception
        message = "see its output above"
    tries = f" after {max_restarts} restart(s)" if max_restarts else ""
    return f"worker rank {rank} failed{tries} (exit code {exitcode}): {message}"


# --- wrapping the model ----------------------------------------------------------------------------------


def check_sync_batchnorm(sync_batchnorm: bool, device: torch.device) -> None:
    """torch's SyncBatchNorm is CUDA-only (DDP refuses it on CPU); say so in config terms, not a DDP traceback."""
    if sync_batchnorm and device.type != "cuda":
        raise UnsupportedSetup("train.sync_batchnorm: torch's SyncBatchNorm runs on CUDA devices only and this run "
                               f"trains on {device.type}; set it to false (each worker then normalises its own "
                               "share of the batch) or train on GPUs")


def wrap_model(model: nn.Module, ctx: DistContext, strategy: str = "ddp", sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DDP (one device per process) or FSDP2 when distributed, the model itself otherwise."""
    if not ctx.distributed:
        return model
    check_sync_batchnorm(sync_batchnorm, ctx.device)
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if strategy == "fsdp":
        return shard_model(model, ctx)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def shard_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """FSDP2: shard every parameterised child of the model's body, then the root, in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for module in list(model.modules())[1:]:
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


# The wrappers around a user's module: (module, class, attribute holding the wrapped module). Looked up in
# sys.modules, not imported: an instance exists only once its class's module is imported, and importing
# torch._dynamo just to ask would cost every run a second. FSDP2 (`fully_shard`) shards in place: no wrapper.
_WRAPPERS = (("torch._dynamo.eval_frame", "OptimizedModule", "_orig_mod"),  # torch.compile
             ("torch.nn.parallel.distributed", "DistributedDataParallel", "module"),
             ("torch.distributed.fsdp.fully_sharded_data_parallel", "FullyShardedDataParallel", "module"))  # FSDP1


def wrapper_chain(model: nn.Module) -> list[nn.Module]:
    """`model` and each module it wraps, outermost first, ending with the user's own module: compile, DDP and
    FSDP wrappers in any order and nesting (`train.compile` around DDP gives [compiled, ddp, net])."""
    chain = [model]
    while (inner := _wrapped(chain[-1])) is not None:
        chain.append(inner)
    return chain


def _wrapped(model: nn.Module) -> nn.Module | None:
    for module, cls, attribute in _WRAPPERS:
        found = sys.modules.get(module)
        if found is not None and isinstance(model, getattr(found, cls)):
            return cast(nn.Module, getattr(model, attribute))
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside any torch.compile / DDP / FSDP wrappers: what is saved, exported and evaluated,
    and what a task's own methods (a GAN's generator, a denoiser's noise) are looked up on."""
    return wrapper_chain(model)[-1]


@contextlib.contextmanager
def no_sync(model: nn.Module, ctx: DistContext, skip: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-batches that do not step the optimiser."""
    ddp = next((m for m in wrapper_chain(model) if isinstance(m, nn.parallel.DistributedDataParallel)), None)
    if not skip or not ctx.distributed:
        yield
    elif ddp is not None:
        with ddp.no_sync():
            yield
    else:  # FSDP2
        inner = unwrap(model)
        inner.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)  # type: ignore[operator]


# --- state dicts (full on rank 0, also under FSDP) -------------------------------------------------------


def _full_options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """A full CPU copy of the weights; under FSDP a collective (call on every rank), complete on rank 0 only."""
    net = unwrap(model)
    if is_sharded(net):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return cast(dict[str, Tensor], get_model_state_dict(net, options=_full_options()))
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def load_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load full weights; under FSDP rank 0's copy is broadcast and sharded."""
    net = unwrap(model)
    if is_sharded(net):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(net, cast(dict[str, Any], state), options=_full_options(broadcast_from_rank0=True))
    else:
        net.load_state_dict(state)


def optimizer_state(model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(unwrap(model), optimizer, options=_full_options())
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: Optimizer, state: dict[str, Any]) -> None:
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(unwrap(model), optimizer, state, options=_full_options(broadcast_from_rank0=True))
    else:
        optimizer.load_state_dict(state)


# --- collectives -----------------------------------------------------------------------------------------


def all_agree(flag: bool, ctx: DistContext) -> bool:
    """True only if every rank says True (so all ranks stop early together)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([0 if flag else 1], device=ctx.device)
    dist.all_reduce(t)
    return int(t.item()) == 0


def all_sum(values: Tensor, ctx: DistContext) -> Tensor:
    """Element-wise sum over ranks (a copy; the input is untouched)."""
    out = values.clone()
    if ctx.distributed:
        dist.all_reduce(out)
    return out


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj` (plain data: tensors, numbers, containers), in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
