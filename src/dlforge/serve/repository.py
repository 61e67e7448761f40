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
from dlforge.serve.contract import Runtime
from dlforge.serve.protocol import RepositoryIndexItem, shorten
from dlforge.serve.validate import ModelSignature
from dlforge.taskapi import Codec

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
    codec: Codec  # client tensors ↔ graph tensors (dlforge.taskapi)
    signature: ModelSignature  # the codec's inputs, value rules and row cap: checked before the codec runs

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
    """model → version → package directory, from the files on disk.

    Model and version folders that resolve outside the repository (symlinks) are skipped: serving
    whatever a link points at would let anyone who can create a link in the repository choose files."""
    if (root / MANIFEST).is_file():
        return {_manifest_name(root): {_manifest_version(root): root}}
    if not root.is_dir():
        raise RepositoryError(f"{root}: neither a model package (no {MANIFEST}) nor a repository directory")
    inside = root.resolve()
    found: dict[str, dict[str, Path]] = {}
    for version_dir in sorted(root.glob(f"*/*/{MANIFEST}")):
        package = version_dir.parent
        if not package.resolve().is_relative_to(inside):
            log.warning("skipped %s: it links outside the repository", package.relative_to(root))
            continue
        found.setdefault(package.parent.name, {})[package.name] = package
    if not found:
        hint = f" — did you mean {root / 'package'}?" if (root / "package" / MANIFEST).is_file() else ""
        raise RepositoryError(f"{root}: no packages found (expected a package with {MANIFEST}, or "
                              f"{root}/<model>/<version>/{MANIFEST}){hint}")
    return found


def _manifest_json(root: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RepositoryError(f"{root / MANIFEST}: not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("name"), str) or not manifest["name"]:
        raise RepositoryError(f"{root / MANIFEST}: needs a \"name\" string (is this a dlforge package?)")
    return manifest


def _manifest_name(root: Path) -> str:
    return str(_manifest_json(root)["name"])


def _manifest_version(root: Path) -> str:
    return str(_manifest_json(root).get("version", "1"))


class Repository:
    """Loaded model versions by name; `get` is the only call on the request path."""

    def __init__(self, root: Path, loader: Loader, only: Collection[str] = ()) -> None:
        self.root = root
        self.loader = loader
        self.only = frozenset(only)  # serve just these models (one Ray Serve deployment per model); empty = all
        self._models: dict[str, dict[str, _Entry]] = {}
        # The default (highest loaded) version per name, with the entries it was found in: every load or
        # unload installs a new entries dict, so an identity check tells whether it is still right.
        self._latest: dict[str, tuple[dict[str, _Entry], ModelInstance]] = {}
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
            except ModelLoadFailed as exc:  # one broken package must not keep the others down
                log.error("%s", exc)

    async def load(self, name: str) -> None:
        """(Re)load every version of `name` on disk; the old instances drain after the swap.

        Versions load independently: a broken v2 is UNAVAILABLE with its reason while v1 serves. A reload
        in which every version fails keeps the versions that were serving."""
        async with self._lock:
            on_disk = self._on_disk()
            versions = on_disk.get(name)
            if versions is None:
                short = shorten(name)
                raise ModelNotFound(f"no model '{short}' in the repository{suggest(short, list(on_disk))}")
            fresh = {v: _Entry(p) for v, p in versions.items()}
            reasons = {v: await self._load_one(name, v, e) for v, e in fresh.items()}
            failed = [f"version {v}: {reason}" for v, reason in reasons.items() if reason]
            serving = any(e.instance for e in self._models.get(name, {}).values())
            if len(failed) == len(fresh) and serving:
                raise ModelLoadFailed(f"failed to load model '{name}' ({'; '.join(failed)}); "
                                      "the versions loaded before keep serving")
            old, self._models[name] = self._models.get(name, {}), fresh
            self._latest.pop(name, None)  # not needed for correctness (see __init__): frees the old instance
            await _close_all(old)
            loaded = sorted((v for v, e in fresh.items() if e.instance), key=version_key)
            log.info("loaded %s versions %s", name, loaded)
            if failed:
                raise ModelLoadFailed(f"failed to load model '{name}' ({'; '.join(failed)})")

    async def _load_one(self, name: str, version: str, entry: _Entry) -> str:
        """Load one version into `entry`; returns why it failed ('' when it loaded)."""
        try:
            entry.instance = await self.loader(name, version, entry.path)
        except Exception as exc:
            entry.reason, entry.failed = f"load failed: {self.public(exc)}", True
            log.error("model %s version %s failed to load: %s", name, version, exc)
            return entry.reason
        return ""

    def public(self, exc: BaseException) -> str:
        """An error message fit for clients: paths relative to the repository, never the server's layout."""
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        for root in {str(self.root.resolve()), str(self.root.absolute()), str(self.root)}:
            text = text.replace(root + "/", "").replace(root, ".")
        return shorten(text, 300)

    def _on_disk(self) -> dict[str, dict[str, Path]]:
        try:
            return self.discover()
        except RepositoryError as exc:
            raise ModelLoadFailed(self.public(exc)) from None

    async def unload(self, name: str) -> None:
        """Stop routing to `name`, then let its queued requests finish."""
        async with self._lock:
            entries = self._models.get(name)
            if entries is None:
                raise ModelNotFound(f"no model '{shorten(name)}'{suggest(shorten(name), list(self._models))}")
            self._models[name] = {v: _Entry(e.path, reason="unloaded") for v, e in entries.items()}
            self._latest.pop(name, None)
            await _close_all(entries)

    async def close(self) -> None:
        """Shutdown: drain every batcher."""
        async with self._lock:
            models, self._models = self._models, {}
            self._latest.clear()
            await asyncio.gather(*(_close_all(entries) for entries in models.values()))

    # --- request path ---------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ModelInstance:
        """The instance to serve; without `version`, the highest loaded one."""
        entries = self._entries(name)
        if version is None:
            latest = self._latest.get(name)
            if latest is not None and latest[0] is entries:
                return latest[1]
            loaded = {v: e.instance for v, e in entries.items() if e.instance is not None}
            if not loaded:
                raise ModelNotReady(f"model '{name}' is not loaded ({_reasons(entries)})")
            instance = loaded[max(loaded, key=version_key)]
            self._latest[name] = (entries, instance)
            return instance
        entry = entries.get(version)
        if entry is None:
            known = ", ".join(self.versions(name))
            raise ModelNotFound(f"model '{name}' has no version '{shorten(version)}' (versions: {known})")
        if entry.instance is None:
            raise ModelNotReady(f"model '{name}' version {version} is not loaded ({entry.reason})")
        return entry.instance

    def versions(self, name: str) -> list[str]:
        return sorted(self._entries(name), key=version_key)

    def _entries(self, name: str) -> dict[str, _Entry]:
        entries = self._models.get(name)
        if entries is None:
            raise ModelNotFound(unknown_model(shorten(name), list(self._models)))
        return entries

    def ready(self) -> bool:
        """Serving: something is loaded, and no model failed in every version (one bad version of several
        is reported in the index, while its siblings serve)."""
        loaded = [any(e.instance for e in versions.values()) for versions in self._models.values()]
        broken = [all(e.failed for e in versions.values()) for versions in self._models.values()]
        return any(loaded) and not any(broken)

    def index(self) -> list[RepositoryIndexItem]:
        """Every model version on disk or known, with its state."""
        on_disk = self._on_disk()
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
