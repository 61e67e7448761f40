"""A small generic name → object registry, one instance per family (layers, models, datasets…).

Unknown names fail with the list of what exists and the closest match, so a typo in a YAML file
reads as a fix, not a stack trace. A registry may take third-party entries from an entry point group
(`dlforge.layers`, …), loaded on first use: each entry point names a `register(registry)` function,
as pytest and timm plugins do. A plugin that fails to load is reported once on stderr as one `error:`
line naming it and its distribution; everything else keeps working.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dlforge.errors import UserError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


def suggest(name: str, choices: list[str]) -> str:
    """' — did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Maps names to objects of one family; registration is explicit (no import side effects)."""

    def __init__(self, family: str, plugins: str | None = None) -> None:
        self.family = family
        self.plugins = plugins  # the entry point group third-party entries come from
        self.broken: dict[str, str] = {}  # "plugin (distribution)" → why it failed to load
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._adding_for = "dlforge"
        self._loaded = plugins is None

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=str(self.plugins)):
            dist = point.dist.name if point.dist is not None else "unknown distribution"
            self._adding_for = dist
            try:
                point.load()(self)
            except Exception as exc:  # a plugin's bug must not take the built-ins down with it
                where = f"{point.name} ({dist})"
                self.broken[where] = f"{type(exc).__name__}: {exc}"
                sys.stderr.write(f"error: {self.family} plugin {where} failed to load and is left out "
                                 f"({self.broken[where]}); fix or uninstall {dist}\n")
            finally:
                self._adding_for = "dlforge"

    def origin(self, name: str) -> str:
        """The distribution that registered `name` ("dlforge" for built-ins)."""
        self._load_plugins()
        return self._origin.get(name, "dlforge")

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@LAYERS.register("conv2d")`."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.family} '{name}' is already registered (by {self._origin[name]})")
        self._items[name] = obj
        self._origin[name] = self._adding_for

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = sorted(self._items)
            raise RegistryError(
                f"unknown {self.family} '{name}'{suggest(name, known)} "
                f"(known: {', '.join(known)})"
                + (f"; plugins that failed to load: {', '.join(self.broken)}" if self.broken else "")
            ) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._items)
