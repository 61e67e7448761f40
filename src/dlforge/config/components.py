"""Components: registry entries whose settings are a pydantic model (layers, augmentations…).

A `ComponentSpec` from YAML is resolved against a registry of `Component`s into validated params,
with errors that carry the key path (`model.layers[3].kernel: …`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from dlforge.config.errors import ConfigError, problems_from
from dlforge.config.schema import ComponentSpec
from dlforge.registry import Registry, RegistryError

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Component(Generic[P]):
    """A registered building block: its settings model, its factory and its short-form key."""

    params: type[P]
    build: Callable[..., Any]
    primary: str | None = None  # `- dense: 10` sets this field
    doc: str = ""


def resolve(registry: Registry[Component[Any]], spec: ComponentSpec, path: str) -> tuple[Component[Any], BaseModel]:
    """Look `spec.type` up and validate its params; ConfigError names `path` on any problem."""
    try:
        component = registry.get(spec.type)
    except RegistryError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    raw = dict(spec.params)
    if spec.value is not None:
        if component.primary is None:
            raise ConfigError(
                [f"{path}: '{spec.type}' takes no short value; write `- {spec.type}: {{…}}` with named settings"]
            )
        raw.setdefault(component.primary, spec.value)
    try:
        params = component.params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, component.params, prefix=path)) from None
    return component, params


def describe(registry: Registry[Component[Any]]) -> list[tuple[str, str, str, str]]:
    """(name, parameters with defaults, doc, distribution) rows for `dlforge layers` and friends."""
    rows = []
    for name in registry.names():
        comp = registry.get(name)
        fields = []
        for field_name, field in comp.params.model_fields.items():
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            fields.append(f"{field_name}={default}")
        rows.append((name, ", ".join(fields), comp.doc, registry.origin(name)))
    return rows
