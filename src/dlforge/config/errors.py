"""Turning validation failures into messages a user can act on: key path, problem, fix."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from dlforge.errors import UserError
from dlforge.registry import suggest


class ConfigError(UserError, ValueError):
    """A config that cannot work; the message lists every problem, one `path: problem` a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid config:\n  " + "\n  ".join(problems))


def format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the (nested) model that `loc` points into, for suggestions."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = field.annotation
        args = getattr(current, "__args__", ())
        current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def problems_from(error: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per pydantic error, with 'did you mean' for misspelled keys."""
    lines = []
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        path = format_path(((prefix,) if prefix else ()) + loc)
        if err["type"] == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
            hint = suggest(str(loc[-1]), known) or (f" (known: {', '.join(known)})" if known else "")
            lines.append(f"{path}: unknown key{hint}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            lines.append(f"{path}: {err['msg']}{shown}")
    return lines
