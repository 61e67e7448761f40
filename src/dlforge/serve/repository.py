"""The model repository: which model versions exist on disk, which are loaded, and swapping them.

PATH is one package (served as its manifest's name and version) or `REPO/<model>/<version>/`,
each version a package. Replacement has no downtime: a reload builds and warms the new instances
first, swaps them in with one dict assignment (new requests go to the new ones), then drains the
old batchers, so requests already queued on the old instance finish there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlforge.errors import UserError
from dlforge.registry import suggest
from dlforge.serve.batcher import Batcher
from dlforge.serve.protocol import RepositoryIndexItem
from dlforge.serve.runtime import Runtime
from dlforge.tasks import Codec

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class ModelNotFound(UserError, LookupError):
    """No such model or version in the repository (404)."""


class RepositoryError(UserError, FileNotFoundError):
    """PATH holds neither a package nor a repository of them; the message says what was expected."""


class ModelNotReady(RuntimeError):
    """The model exists but is not loaded (503)."""


class ModelLoadFailed(UserError, RuntimeError):
    """A package could not be loaded (400): the files are broken or incompatible, not the server."""


@dataclass
class ModelInstance:
    """One loaded version: its package facts, its engine, the batcher in front of it and the task's codec."""

    name: str
    version: str
    manifest: Any  # dlforge.export.package.Manifest
    runtime: Runtime
    batcher: Batcher
    codec: Codec  # client tensors ↔ graph tensors (dlforge.tasks)

    async def close(self) -> None:
        await self.batcher.stop(drain=True)


Loader = Callable[[str, str, Path], Awaitable[ModelInstance]]


@dataclass
class _Entry:
    path: Path
    instance: ModelInstance | None = None
    reason: str = "not loaded"
    failed: bool = False


def version_key(version: str) -> tuple[int, int, str]:
    """Numeric versions sort as numbers ("10" > "9"); others after them, alphabetically."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def discover(root: Path) -> dict[str, dict[str, Path]]:
    """model → version → package directory, from the files on disk."""
    if (root / MANIFEST).is_file():
        manifest = json.loads((root / MANIFEST).read_text())
        return {str(manifest["name"]): {str(manifest.get("version", "1")): root}}
    if not root.is_dir():
        raise RepositoryError(f"{root}: neither a model package (no {MANIFEST}) nor a repository directory")
    found: dict[str, dict[str, Path]] = {}
    for version_dir in sorted(root.glob(f"*/*/{MANIFEST}")):
        package = version_dir.parent
        found.setdefault(package.parent.name, {})[package.name] = package
    if not found:
        hint = f" — did you mean {root / 'package'}?" if (root / "package" / MANIFEST).is_file() else ""
        raise RepositoryError(f"{root}: no packages found (expected a package with {MANIFEST}, or "
                              f"{root}/<model>/<version>/{MANIFEST}){hint}")
    return found


class Repository:
    """Loaded model versions by name; `get` is the only call on the request path."""

    def __init__(self, root: Path, loader: Loader, only: Collection[str] = ()) -> None:
        self.root = root
        self.loader = loader
        self.only = frozenset(only)  # serve just these models (one Ray Serve deployment per model); empty = all
        self._models: dict[str, dict[str, _Entry]] = {}
        self._lock = asyncio.Lock()  # one load/unload at a time

    def discover(self) -> dict[str, dict[str, Path]]:
        """The model versions on disk that this repository serves."""
        found = discover(self.root)
        if self.only:
            missing = sorted(self.only - set(found))
            if missing:
                raise ModelNotFound(unknown_model(missing[0], list(found)))
            found = {name: versions for name, versions in found.items() if name in self.only}
        return found

    async def load_all(self) -> None:
        for name in self.discover():
            try:
                await self.load(name)
            except Exception as exc:  # one broken package must not keep the others down
                log.error("model %s failed to load: %s", name, exc)

    async def load(self, name: str) -> None:
        """(Re)load every version of `name` on disk; the old instances drain after the swap."""
        async with self._lock:
            on_disk = self.discover()
            versions = on_disk.get(name)
            if versions is None:
                raise ModelNotFound(f"no model '{name}' in {self.root}{suggest(name, list(on_disk))}")
            fresh = {v: _Entry(p) for v, p in versions.items()}
            try:
                for version, entry in fresh.items():
                    entry.instance = await self.loader(name, version, entry.path)
            except Exception as exc:
                await _close_all(fresh)
                self._mark_failed(name, fresh, exc)
                raise ModelLoadFailed(f"failed to load model '{name}': {type(exc).__name__}: {exc}") from exc
            old, self._models[name] = self._models.get(name, {}), fresh
            await _close_all(old)
            log.info("loaded %s versions %s", name, sorted(fresh, key=version_key))

    async def unload(self, name: str) -> None:
        """Stop routing to `name`, then let its queued requests finish."""
        async with self._lock:
            entries = self._models.get(name)
            if entries is None:
                raise ModelNotFound(f"no model '{name}'{suggest(name, list(self._models))}")
            self._models[name] = {v: _Entry(e.path, reason="unloaded") for v, e in entries.items()}
            await _close_all(entries)

    async def close(self) -> None:
        """Shutdown: drain every batcher."""
        async with self._lock:
            models, self._models = self._models, {}
            await asyncio.gather(*(_close_all(entries) for entries in models.values()))

    def _mark_failed(self, name: str, fresh: dict[str, _Entry], exc: Exception) -> None:
        if any(e.instance for e in self._models.get(name, {}).values()):
            return  # a failed reload keeps the versions that are serving
        for entry in fresh.values():
            entry.instance, entry.reason, entry.failed = None, f"load failed: {exc}", True
        self._models[name] = fresh

    # --- request path ---------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ModelInstance:
        """The instance to serve; without `version`, the highest loaded one."""
        entries = self._entries(name)
        if version is None:
            loaded = [v for v, e in entries.items() if e.instance is not None]
            if not loaded:
                raise ModelNotReady(f"model '{name}' is not loaded ({_reasons(entries)})")
            version = max(loaded, key=version_key)
        entry = entries.get(version)
        if entry is None:
            known = ", ".join(self.versions(name))
            raise ModelNotFound(f"model '{name}' has no version '{version}' (versions: {known})")
        if entry.instance is None:
            raise ModelNotReady(f"model '{name}' version {version} is not loaded ({entry.reason})")
        return entry.instance

    def versions(self, name: str) -> list[str]:
        return sorted(self._entries(name), key=version_key)

    def _entries(self, name: str) -> dict[str, _Entry]:
        entries = self._models.get(name)
        if entries is None:
            raise ModelNotFound(unknown_model(name, list(self._models)))
        return entries

    def ready(self) -> bool:
        """Serving: something is loaded and nothing failed to load."""
        entries = [e for versions in self._models.values() for e in versions.values()]
        return any(e.instance for e in entries) and not any(e.failed for e in entries)

    def index(self) -> list[RepositoryIndexItem]:
        """Every model version on disk or known, with its state."""
        on_disk = self.discover()
        items = []
        for name in sorted(set(on_disk) | set(self._models)):
            known = self._models.get(name, {})
            for version in sorted(set(on_disk.get(name, {})) | set(known), key=version_key):
                entry = known.get(version)
                state = "READY" if entry and entry.instance else "UNAVAILABLE"
                reason = "" if state == "READY" else (entry.reason if entry else "not loaded")
                items.append(RepositoryIndexItem(name=name, version=version, state=state, reason=reason))
        return items

    def batchers(self) -> dict[tuple[str, str], Batcher]:
        return {(n, v): e.instance.batcher for n, versions in self._models.items()
                for v, e in versions.items() if e.instance is not None}


def unknown_model(name: str, known: list[str]) -> str:
    """The 404 message for a model name nobody serves (shared with the Ray front deployment)."""
    return f"unknown model '{name}'{suggest(name, known)} (models: {', '.join(sorted(known)) or 'none'})"


def _reasons(entries: dict[str, _Entry]) -> str:
    return "; ".join(sorted({e.reason for e in entries.values()}))


async def _close_all(entries: dict[str, _Entry]) -> None:
    await asyncio.gather(*(e.instance.close() for e in entries.values() if e.instance is not None))
